#!/usr/bin/env python3
"""Read `perf record` profiles of the plugin benches (gateway/plugin-host/README.md,
"Where the time goes per reading").

  perf-plugin.py shares PERF_DATA
      share of the host path's time by kind: the guest plugin's own code,
      its allocator, the ABI glue, host JSON, host malloc, wasmtime, ...
      (start-up compilation left out). Needs the plugin's functions named:
      the benches' profiling mode turns on `profiler = "perfmap"`.

  perf-plugin.py compare HOST_DATA NATIVE_DATA HOST_US NATIVE_US
      per function, time per reading through the host and natively: each
      profile's share of a function times the path's µs per reading (from
      the bench's own output).

Profiles come from, e.g.:
  BENCH_PROFILE=facial BENCH_CALLS=10000 perf record -F 2000 -o host.data \\
      target/host-bench/release/emotion-plugin-facephys-host-bench target/plugins
  BENCH_PROFILE=facial:native BENCH_CALLS=40000 perf record -F 2000 -o native.data \\
      target/host-bench/release/emotion-plugin-facephys-host-bench target/plugins
"""
import collections
import re
import subprocess
import sys

COMPILE = re.compile(r"cranelift|regalloc|wasmparser|wasmtime_environ|wasmtime_cranelift|gimli|object::")


def rows(data, sort):
    out = subprocess.run(
        ["perf", "report", "-i", data, "--no-children", "--sort", sort, "-g", "none",
         "--percent-limit", "0", "--stdio"],
        capture_output=True, text=True, check=True).stdout
    pattern = (r"\s+([\d.]+)%\s+(\S+(?: tid \d+)?)\s+\[.\]\s+(.*)$" if sort == "dso,symbol"
               else r"\s+([\d.]+)%\s+()\[.\]\s+(.*)$")
    for line in out.splitlines():
        m = re.match(pattern, line)
        if m:
            # perf pads the symbol column and may add more after it.
            yield float(m.group(1)), m.group(2), re.split(r"\s{2,}", m.group(3).strip())[0]


def kind(dso, sym):
    if dso.startswith("[kernel"):
        return "kernel"
    if dso.startswith("[JIT"):
        if re.search(r"dlmalloc|__rdl_|__rust_alloc|rust_dealloc|cabi_realloc", sym):
            return "guest malloc/free"
        if re.search(r"plugin@|trampoline|wasmtime_builtin|from_utf8|_export_|wit_bindgen", sym):
            return "guest ABI glue (lift/lower, UTF-8 checks, trampolines)"
        return "guest plugin code"
    if "libc" in dso:
        return "host memcpy/memcmp" if "mem" in sym else "host malloc/free"
    if re.search(r"serde|btree|BTree", sym):
        return "host JSON/context"
    if "wasmtime" in sym:
        return "host wasmtime lower/lift/call"
    return "host other"


def shares(data):
    total = collections.Counter()
    for pct, dso, sym in rows(data, "dso,symbol"):
        total["compile" if COMPILE.search(sym) else kind(dso, sym)] += pct
    run = sum(v for k, v in total.items() if k != "compile")
    for k, v in total.most_common():
        if k != "compile":
            print(f"{v / run * 100:5.1f} %  {k}")
    print(f"(start-up compilation: {total['compile']:.1f} % of the samples, left out)")


def name(sym):
    """Legacy-mangled guest names (`_ZN<len><ident>...17h<hash>E`) and
    demangled host names, both to their last two path segments."""
    if sym.startswith("_ZN"):
        parts, i = [], 3
        while i < len(sym) and sym[i].isdigit():
            j = i
            while sym[j].isdigit():
                j += 1
            n = int(sym[i:j])
            parts.append(sym[j:j + n])
            i = j + n
        parts = [p for p in parts if not re.fullmatch(r"h[0-9a-f]{16}", p)]
        return "::".join(parts[-2:])
    return "::".join(sym.split("::")[-2:])


def per_function(data, us):
    counts = collections.Counter()
    kept = [(pct, sym) for pct, _, sym in rows(data, "symbol") if not COMPILE.search(sym)]
    run = sum(p for p, _ in kept)
    for pct, sym in kept:
        counts[name(sym)] += pct / run * us
    return counts


def compare(host, native, host_us, native_us):
    h, n = per_function(host, float(host_us)), per_function(native, float(native_us))
    for k in sorted(set(h) | set(n), key=lambda k: -(h[k] + n[k]))[:25]:
        print(f"{h[k] * 1000:7.0f} ns host {n[k] * 1000:7.0f} ns native  {k[:90]}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "shares":
        shares(sys.argv[2])
    elif len(sys.argv) == 6 and sys.argv[1] == "compare":
        compare(*sys.argv[2:])
    else:
        sys.exit(__doc__)
