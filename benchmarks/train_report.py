"""bench_train.py's Markdown report: the step table, the time breakdown, the profile and the
targets, from the result it writes as JSON."""

from __future__ import annotations

def header_lines(result):
    m, s, load = result["machine"], result["settings"], result["load"]
    return [
        f"Training benchmark ({result['date']}{', quick mode' if result['quick'] else ''}): "
        f"{m['cpu']}"
        + (f" (family/model {m['cpu_family_model']}, {m['widest_vector_isa']})"
           if m.get("cpu_family_model") else "")
        + f", {m['logical_cpus']} logical CPUs"
        + (f", GPUs {m['gpus']}" if m["gpus"] else ", no GPU")
        + f"; TensorFlow {m['tensorflow']}, Keras {m['keras']}.",
        f"Batch {s['batch_size']}, hidden {s['hidden']}, {s['optimizer']}, data {s['data_source']} "
        f"({s['train_examples']} training images); median of {s['rounds']} interleaved rounds "
        f"of {s['steps_per_window']} steps. Load average (1 min) at start / end: "
        f"{load['loadavg_start'][0]:.2f} / {load['loadavg_end'][0]:.2f}"
        + (f" ({load['note']})" if load["note"] else "") + ".",
    ]


def step_table(result):
    lines = [
        "",
        "| model | z | jit | step ms | examples/s | GFLOP/step | GFLOP/s | matmul peak GFLOP/s "
        "| of peak (range) | npVAE/VAE time (FLOPs) | input wait |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["results"]:
        ratio = (f"{r['npvae_over_vae']:.2f} ({r['npvae_over_vae_flops']:.2f})"
                 if "npvae_over_vae" in r else "")
        lines.append(
            f"| {r['model']} | {r['z_dim']} | {'on' if r['jit_compile'] else 'off'} "
            f"| {r['step_ms']:.1f} | {r['examples_per_s']:.0f} | {r['gflop_per_step']:.3f} "
            f"| {r['effective_gflops']:.1f} | {r['peak_gflops_at_shapes']:.1f} "
            f"| {100 * r['fraction_of_peak']:.0f}% ({100 * r['fraction_of_peak_range'][0]:.0f}-"
            f"{100 * r['fraction_of_peak_range'][1]:.0f}%) "
            f"| {ratio} | {100 * r['input_wait']:.1f}% |")
    return lines


def breakdown_table(result):
    lines = [
        "",
        "Step time breakdown (ms; each part compiled and timed on its own, same rounds):",
        "",
        "| model | z | jit | step | forward | forward+backward | optimizer+metrics "
        "| matmuls at peak | kernel fwd+bwd |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["results"]:
        b = r["breakdown_ms"]
        kernel = f"{b['kernel_forward_backward']:.2f}" if r["model"] == "npvae" else ""
        lines.append(
            f"| {r['model']} | {r['z_dim']} | {'on' if r['jit_compile'] else 'off'} "
            f"| {b['step_cached_batch']:.1f} | {b['forward']:.1f} | {b['forward_backward']:.1f} "
            f"| {b['optimizer_and_metrics']:.1f} | {b['matmuls_at_peak']:.1f} | {kernel} |")
    return lines


def profile_table(result):
    profiles = result.get("profiles") or {}
    lines = []
    if any("categories_ms" in v for v in profiles.values()):
        lines += [
            "",
            "Op time per step under tf.profiler (ms, summed over threads; XLA fusions are "
            "'other'):",
            "",
            "| configuration | step ms | matmul | optimizer | random | other | largest op (ms) |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for name, prof in profiles.items():
            if "categories_ms" not in prof:
                lines.append(f"| {name} | {prof.get('error', '')} ||||||")
                continue
            c = prof["categories_ms"]
            top = prof["top_ops"][0] if prof["top_ops"] else {"op": "", "ms": 0.0}
            op = top["op"].replace("StatefulPartitionedCall/", "").replace("|", "/")
            lines.append(
                f"| {name} | {prof['wall_ms_per_step_under_profiler']:.1f} "
                + "".join(f"| {c.get(k, 0.0):.1f} " for k in ("matmul", "optimizer", "random",
                                                               "other"))
                + f"| `{op[-60:]}` ({top['ms']:.1f}) |")
    return lines


def closing_lines(result):
    p = result["input_pipeline"]
    lines = [
        "",
        f"Input pipeline: {p['next_batch_ms_alone']:.3f} ms per prefetched batch on its own; "
        f"{1e3 * p['epoch_start_s']:.0f} ms to the first batch of an epoch (shuffle buffer "
        f"fill), over {p['steps_per_epoch']} steps per epoch.",
    ]
    fit = result.get("fit_check")
    if fit:
        lines.append(f"One `model.fit` epoch of {fit['config']} (no validation or callbacks): "
                     f"{fit['epoch_s']:.1f} s, {fit['ms_per_step']:.1f} ms per step (benchmark "
                     f"step: {fit['benchmark_step_ms']:.1f} ms); its first step ended "
                     f"{1e3 * fit['first_batch_s']:.0f} ms after the epoch began.")
    lines += [
        "",
        "Targets: npVAE/VAE step time <= 1.4, >= 60% of the matmul peak at the same shapes, "
        "input wait < 5% of step time.",
    ]
    if result["quick"]:
        lines.append("Quick mode (small layers, few steps) checks that the benchmark runs; its "
                     "numbers mean nothing.")
    return lines


def markdown(result):
    lines = (header_lines(result) + step_table(result) + breakdown_table(result)
             + profile_table(result) + closing_lines(result))
    return "\n".join(lines) + "\n"
