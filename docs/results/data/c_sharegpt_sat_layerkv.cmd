layerkv sim --model llama2-7b --gpu a100 --policy layerkv --trace sharegpt --max-total 8192 --rate 6 --n-requests 1000 --seed 4 --ttft-slo-ms 5000 --tpot-slo-ms 100
