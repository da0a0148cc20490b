layerkv sim --model llama2-7b --gpu a100 --policy baseline --trace arxiv --max-total 4096 --rate 2.25 --n-requests 600 --seed 3 --ttft-slo-ms 5000 --tpot-slo-ms 100
