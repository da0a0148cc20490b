layerkv sim --model llama2-70b --gpu a100 --tp 4 --policy baseline --prompt-len 2048 --output-len 512 --rate 0.04 --n-requests 150 --seed 1 --ttft-slo-ms 10000 --tpot-slo-ms 200
