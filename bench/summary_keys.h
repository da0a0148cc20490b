/* summary_keys.h - the metric keys that `layerkv bench` and `layerkv sim`
 * both write at the top level of their JSON (one list, so plots can put a
 * simulated run next to a measured one and the two schemas cannot drift).
 * Both lkv_bench_summary_t (bench/bench.h) and lkv_sim_result_t
 * (sim/simulator.h) have a member of each name; definitions are in
 * bench.h's summary comment.
 *
 * Usage: LKV_SUMMARY_KEYS(D, I) expands D(name) for each double member and
 * I(name) for each integer member, in the order they are written.
 */
#ifndef LKV_BENCH_SUMMARY_KEYS_H
#define LKV_BENCH_SUMMARY_KEYS_H

#define LKV_SUMMARY_KEYS(D, I)                                                 \
    I(n_requests)                                                              \
    I(n_completed)                                                             \
    I(n_failed)                                                                \
    I(n_rejected)                                                              \
    D(mean_ttft_s)                                                             \
    D(p50_ttft_s)                                                              \
    D(p90_ttft_s)                                                              \
    D(p99_ttft_s)                                                              \
    D(mean_queue_s)                                                            \
    D(p99_queue_s)                                                             \
    D(mean_prefill_s)                                                          \
    D(mean_tpot_s)                                                             \
    D(p50_tpot_s)                                                              \
    D(p99_tpot_s)                                                              \
    D(mean_e2e_s)                                                              \
    D(slo_violation_rate)                                                      \
    D(ttft_attainment)                                                         \
    D(tpot_attainment)                                                         \
    D(throughput_tok_s)                                                        \
    D(throughput_req_s)                                                        \
    D(makespan_s)                                                              \
    I(output_tokens)

#endif /* LKV_BENCH_SUMMARY_KEYS_H */
