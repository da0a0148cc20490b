layerkv sim --model llama2-7b --policy layerkv --instances 64 --prompt-len 512 --output-len 32 --rate 640 --n-requests 1000000 --seed 5
