layerkv sim --model llama2-7b --gpu a100 --tp 1 --policy layerkv --prompt-len 32768 --output-len 512 --rate 0.08 --n-requests 200 --seed 1 --staging-window 0 --ttft-slo-ms 10000 --tpot-slo-ms 200
