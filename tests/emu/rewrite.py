#!/usr/bin/env python3
"""rewrite.py SRC DST - one CUDA source file made host C++ for the kernel emulator (emu_cuda.h).

The host compiler cannot parse two pieces of CUDA syntax, so they become calls:
  kernel<A, B><<<grid, block, smem, stream>>>(args)
      -> bf_emu_launch(grid, block, smem, stream).named("kernel<A, B>").run(kernel<A, B>)(args)
  extern __shared__ double sums[];
      -> double *sums = (double *)bf_emu_dynamic_smem();
Everything else is copied as it is, so line numbers (and compiler messages) match the original.
"""
import os
import re
import sys

SHARED = re.compile(r"extern\s+__shared__\s+(?:__align__\(\s*\d+\s*\)\s+)?([A-Za-z_][\w\s\*]*?)\s+(\w+)\s*\[\s*\]\s*;")


def kernel_start(text, end):
    """Index where the kernel expression that ends at `end` (just before <<<) begins: an
    identifier, possibly qualified, possibly followed by a balanced <...> template argument list."""
    i = end
    while i > 0 and text[i - 1] in " \t\n\\":
        i -= 1
    if i > 0 and text[i - 1] == ">":
        depth = 0
        while i > 0:
            i -= 1
            if text[i] == ">":
                depth += 1
            elif text[i] == "<":
                depth -= 1
                if depth == 0:
                    break
        else:
            raise ValueError("unbalanced template arguments before <<<")
    while i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_:"):
        i -= 1
    return i


def rewrite_launches(text):
    out = []
    pos = 0
    while True:
        open_at = text.find("<<<", pos)
        if open_at < 0:
            out.append(text[pos:])
            return "".join(out)
        close_at = text.find(">>>", open_at)
        if close_at < 0:
            raise ValueError("<<< without >>>")
        start = kernel_start(text, open_at)
        kernel = " ".join(text[start:open_at].replace("\\", " ").split())
        config = text[open_at + 3:close_at]
        after = close_at + 3
        while text[after] in " \t\n\\":
            after += 1
        if text[after] != "(":  # not a launch (a comment's "<<<...>>>")
            out.append(text[pos:after])
            pos = after
            continue
        args_at = after + 1
        if not kernel:
            raise ValueError("no kernel before <<< at offset %d" % open_at)
        name = kernel.replace('"', '\\"')
        call = 'bf_emu_launch(%s).named("%s").run(%s)(' % (config, name, kernel)
        out.append(text[pos:start])
        out.append(call)
        removed = text[start:args_at]
        if "\\" not in removed:  # keep the line count (not inside a macro's continued lines)
            out.append("\n" * removed.count("\n"))
        pos = args_at


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: rewrite.py SRC DST\n")
        return 2
    with open(sys.argv[1]) as f:
        text = f.read()
    text = SHARED.sub(lambda m: "%s *%s = (%s *)bf_emu_dynamic_smem();" % (m.group(1), m.group(2), m.group(1)), text)
    try:
        text = rewrite_launches(text)
    except ValueError as e:
        sys.stderr.write("rewrite.py: %s: %s\n" % (sys.argv[1], e))
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(sys.argv[2])), exist_ok=True)
    with open(sys.argv[2], "w") as f:
        f.write('#line 1 "%s"\n' % sys.argv[1])
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
