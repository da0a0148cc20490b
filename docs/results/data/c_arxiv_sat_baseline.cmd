layerkv sim --model llama2-7b --gpu a100 --policy baseline --trace arxiv --max-total 4096 --rate 6 --n-requests 1000 --seed 4 --ttft-slo-ms 5000 --tpot-slo-ms 100
