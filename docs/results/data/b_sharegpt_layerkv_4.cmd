layerkv sim --model llama2-7b --gpu a100 --policy layerkv --trace sharegpt --max-total 8192 --rate 4 --n-requests 600 --seed 2 --ttft-slo-ms 5000 --tpot-slo-ms 100
