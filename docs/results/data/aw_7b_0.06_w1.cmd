layerkv sim --model llama2-7b --gpu a100 --tp 1 --policy layerkv --prompt-len 32768 --output-len 512 --rate 0.06 --n-requests 200 --seed 1 --staging-window 1 --ttft-slo-ms 10000 --tpot-slo-ms 200
