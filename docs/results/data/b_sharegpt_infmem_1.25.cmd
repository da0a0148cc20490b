layerkv sim --model llama2-7b --gpu a100 --policy baseline --trace sharegpt --max-total 8192 --rate 1.25 --n-requests 600 --seed 2 --num-blocks 74000 --ttft-slo-ms 5000 --tpot-slo-ms 100
