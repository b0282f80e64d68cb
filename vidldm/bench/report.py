"""The benchmark report as a plain-text table (the JSON holds everything; this is for reading)."""

from __future__ import annotations


def _num(value, fmt: str = ".3g") -> str:
    return "-" if value is None else format(value, fmt)


def _gib(value) -> str:
    return "-" if value is None else f"{value / 2**30:.2f}"


def _mib(value) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def _rows(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


def format_table(report: dict) -> str:
    """One block per setting: comparison rows, long-clip memory, or training steps."""
    out = []
    machine = report.get("machine") or {}
    if machine:
        where = machine.get("gpu") or f"{machine.get('cpu')} ({machine.get('torch_threads')} threads)"
        out.append(f"machine: {where}; torch {machine.get('torch')}, diffusers {machine.get('diffusers')}")
    for name, result in report["settings"].items():
        o = result["options"]
        out.append("")
        if name in ("sd15", "tiny-cpu"):
            flops = result.get("flops", {})
            out.append(f"{name}: {o['model']} {o['height']}x{o['width']}, {o['frames']} frames, {o['steps']} steps, "
                       f"cfg {o['guidance']}, {o['device']}; one clip = {_num(flops.get('clip_tflop'))} TFLOP")
            header = ["dtype", "side", "variant", "s/clip", "x diff.eager", "x diff.compile", "UNet s/step",
                      "decode s", "peak GiB", "TFLOP/s", "cos fp32", "warm-up s"]
            rows = [[r["dtype"], r["side"], r["variant"], _num(r["s_per_clip"]), _num(r["speedup_vs_diffusers_eager"]),
                     _num(r["speedup_vs_diffusers_compile"]), _num(r["unet_s_per_step"]), _num(r["decode_s"]),
                     _gib(r["peak_memory_bytes"]), _num(r["clip_tflops_per_s"]), _num(r.get("cosine_vs_fp32"), ".6f"),
                     _num(r["warmup_s"])] for r in result["cases"]]
            out += _rows(header, rows)
            for dtype, a in result.get("agreement", {}).items():
                out.append(f"same weights, {dtype}: vidldm plain vs diffusers eager latents cosine {a['cosine']:.6f}, "
                           f"max |diff| {a['max_abs_diff']:.3g}")
        elif name == "long":
            out.append(f"long: {o['model']} {o['height']}x{o['width']}, {o['steps']} steps, {o['device']}, "
                       f"context windows of {o['context_frames']} (overlap {o['context_overlap']})")
            rows = [[str(r["frames"]), str(r["windows"]), _num(r["s_per_clip"]), _gib(r["peak_memory_bytes"]),
                     _mib(r["growth_bytes"])] for r in result["cases"]]
            out += _rows(["frames", "windows", "s/clip", "peak GiB", "growth MiB"], rows)
            out.append(f"{o['long_frames']} vs {o['frames']} frames: peak x{_num(result.get('peak_memory_ratio'))}, "
                       f"growth x{_num(result.get('growth_ratio'))} (target: <= 1.5)")
        elif name == "train":
            out.append(f"train (temporal stage): {o['model']} {o['train_height']}x{o['train_width']}, "
                       f"{o['train_frames']} frames, {o['dtypes'][0]}, {o['device']}")
            rows = [["on" if r["gradient_checkpointing"] else "off", str(r["batch"]), _num(r["s_per_step"]),
                     _num(r["clips_per_s"]), _gib(r["peak_memory_bytes"]), _mib(r["growth_bytes"])]
                    for r in result["cases"]]
            out += _rows(["checkpointing", "batch", "s/step", "clips/s", "peak GiB", "growth MiB"], rows)
    return "\n".join(out)
