layerkv sim --model llama2-7b --policy layerkv --contiguous-layers --trace sharegpt --max-total 8192 --rate 1.5 --n-requests 600 --seed 2 --ttft-slo-ms 5000 --tpot-slo-ms 100
