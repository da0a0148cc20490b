# run_output.bash - sourced by tests that compare `layerkv run` outputs (not
# a test itself: the .bash suffix keeps it out of ctest's *.sh glob).
# sort_blocks: stdin's "[i] text" blocks (a text may span lines) in prompt
# order. With several prompts `layerkv run` prints each completion when it
# finishes, and copy timing (reloads) can change which finishes first, so
# outputs are compared after sorting; a single prompt passes unchanged.
sort_blocks() {
    python3 -c '
import re, sys
blocks, cur = {}, None
for line in sys.stdin.read().split("\n"):
    m = re.match(r"^\[(\d+)\] ", line)
    if m and int(m.group(1)) not in blocks:
        cur = int(m.group(1)); blocks[cur] = [line]
    elif cur is not None:
        blocks[cur].append(line)
    else:
        blocks.setdefault(-1, []).append(line)
# trailing newlines of a block depend on whether it was printed last
sys.stdout.write("\n".join("\n".join(blocks[k]).rstrip("\n") for k in sorted(blocks)))
'
}
