#!/usr/bin/env python3
"""The biggest functions of a wasm module: `wasm_sizes.py MODULE [N]` prints the top N (20) by
code size (bytes of the function body in the code section), with the names from the module's
`name` section where it has one, and the module's size by section. Standard library only."""

import json
import sys


def leb(data, pos):
    value, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def sections(data):
    if data[:4] != b"\0asm":
        raise ValueError("not a wasm module")
    pos = 8
    while pos < len(data):
        kind = data[pos]
        size, body = leb(data, pos + 1)
        yield kind, data[body : body + size]
        pos = body + size


def analyse(data):
    imported = 0
    bodies = []
    names = {}
    by_section = {}
    for kind, body in sections(data):
        label = {0: "custom", 1: "type", 2: "import", 3: "function", 6: "global", 7: "export",
                 10: "code", 11: "data"}.get(kind, f"section {kind}")
        if kind == 2:
            count, pos = leb(body, 0)
            for _ in range(count):
                for _ in range(2):  # module and field names
                    length, pos = leb(body, pos)
                    pos += length
                desc = body[pos]
                pos += 1
                if desc == 0:
                    _, pos = leb(body, pos)
                    imported += 1
                elif desc == 1:  # table: reftype, limits
                    pos += 1
                    flags, pos = leb(body, pos)
                    _, pos = leb(body, pos)
                    if flags & 1:
                        _, pos = leb(body, pos)
                elif desc == 2:  # memory: limits
                    flags, pos = leb(body, pos)
                    _, pos = leb(body, pos)
                    if flags & 1:
                        _, pos = leb(body, pos)
                else:  # global: valtype, mutability
                    pos += 2
        elif kind == 10:
            count, pos = leb(body, 0)
            for _ in range(count):
                size, start = leb(body, pos)
                bodies.append(start + size - pos)
                pos = start + size
        elif kind == 0:
            length, pos = leb(body, 0)
            name = body[pos : pos + length].decode("utf-8", "replace")
            label = f"custom {name}"
            if name == "name":
                pos += length
                while pos < len(body):
                    sub = body[pos]
                    size, start = leb(body, pos + 1)
                    if sub == 1:
                        count, p = leb(body, start)
                        for _ in range(count):
                            index, p = leb(body, p)
                            length, p = leb(body, p)
                            names[index] = body[p : p + length].decode("utf-8", "replace")
                            p += length
                    pos = start + size
        by_section[label] = by_section.get(label, 0) + len(body)
    functions = [
        {"index": imported + i, "bytes": size, "name": names.get(imported + i, f"func[{imported + i}]")}
        for i, size in enumerate(bodies)
    ]
    functions.sort(key=lambda f: -f["bytes"])
    return {"module_bytes": len(data), "functions": len(bodies), "code_bytes": sum(bodies),
            "sections": by_section, "top": functions}


def main():
    path = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    with open(path, "rb") as f:
        result = analyse(f.read())
    result["top"] = result["top"][:top]
    if "--json" in sys.argv:
        print(json.dumps(result))
        return
    print(f"{path}: {result['module_bytes']} bytes, {result['functions']} functions, "
          f"code {result['code_bytes']} bytes; sections: "
          + ", ".join(f"{k} {v}" for k, v in sorted(result["sections"].items(), key=lambda kv: -kv[1])))
    for f in result["top"]:
        print(f"{f['bytes']:8d}  {f['name'][:150]}")


if __name__ == "__main__":
    main()
