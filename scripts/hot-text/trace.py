# gdb script (`gdb -batch -x trace.py --args BINARY ARGS...`): runs BINARY once with a
# breakpoint on the entry of every function in its symbol table, removes each breakpoint
# at its first hit, and appends the names of the functions that ran, in first-run order,
# to $HOT_TEXT_OUT. Every thread counts (vCPU and device threads included).
#
# Used by scripts/hot-text.sh; not part of any build.
import os
import subprocess

import gdb

binary = os.path.realpath(gdb.current_progspace().filename)
out_path = os.environ["HOT_TEXT_OUT"]

functions = {}
nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True)
for line in nm.stdout.splitlines():
    fields = line.split()
    if len(fields) == 3 and fields[1] in "tTwW":
        address = int(fields[0], 16)
        if address:
            functions.setdefault(address, fields[2])

for command in [
    "set pagination off",
    "set confirm off",
    # Thousands of breakpoints: insert them once, not around every stop.
    "set breakpoint always-inserted on",
    "set print thread-events off",
]:
    gdb.execute(command)
for signal in ["SIGUSR1", "SIGUSR2", "SIGPIPE", "SIGCHLD", "SIGALRM"] + [
    f"SIG{n}" for n in range(34, 65)
]:
    gdb.execute(f"handle {signal} nostop noprint pass", to_string=True)

gdb.execute("starti", to_string=True)
pid = gdb.selected_inferior().pid
base = None
with open(f"/proc/{pid}/maps") as maps:
    for line in maps:
        if line.rstrip().endswith(binary):
            base = int(line.split("-")[0], 16)
            break
if base is None:
    raise gdb.GdbError(f"{binary} is not mapped in process {pid}")

pending = {}
for address, name in functions.items():
    pending[base + address] = (gdb.Breakpoint(f"*{base + address:#x}", internal=True), name)

ran = []
while gdb.selected_inferior().pid != 0:
    try:
        gdb.execute("continue", to_string=True)
        pc = int(gdb.parse_and_eval("$pc"))
    except gdb.error:
        break
    hit = pending.pop(pc, None)
    if hit is not None:
        hit[0].delete()
        ran.append(hit[1])

status = gdb.parse_and_eval("$_exitcode")
if status.type.code == gdb.TYPE_CODE_VOID or int(status) != 0:
    raise gdb.GdbError(f"the traced run did not exit with status 0 ({status})")
with open(out_path, "a") as out:
    out.writelines(name + "\n" for name in ran)
print(f"hot-text: {len(ran)} of {len(functions)} functions ran")
