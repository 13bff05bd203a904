"""PyTorch peer of tools/benchmark.py: insightface's IR-ResNet and ArcFace head, same protocol.

Runs in its own virtual environment (torch is not a dependency of gluon_face
and never goes into the project's venv); the CPU-only build is enough and pulls
in no CUDA packages::

    python3.11 -m venv ~/torchvenv
    ~/torchvenv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    ~/torchvenv/bin/pip install numpy

Then, from the root of the source tree::

    OMP_NUM_THREADS=2 ~/torchvenv/bin/python tools/benchmark_torch.py
    OMP_NUM_THREADS=2 ~/torchvenv/bin/python tools/benchmark_torch.py \\
        --networks faceresnet50 --repeats 5 --json torch.json
    # side by side with ours, interleaved repeat by repeat:
    OMP_NUM_THREADS=2 python tools/benchmark.py \\
        --torch-python ~/torchvenv/bin/python --networks faceresnet50

Neither gluon_face nor MXNet is installed in that venv: the timing, memory and
table code shared with ours (``gluon_face/benchmarks/timing.py``, ``memory.py``
and ``text.py``, standard library only) is loaded by its path in the source tree.

The network is written here from insightface's description of ``iresnet``
(not copied): stem conv3x3(64) + BN + PReLU; stages of IR units
BN-conv3x3-BN-PReLU-conv3x3(stride)-BN (+ conv1x1(stride)-BN shortcut on the
first unit of each stage); the "E" output BN-Dropout-FC-BN with the last
BN's scale frozen at 1.  Its parameter count (that frozen scale included, as
Gluon declares it too) equals FaceResNet's: 43,590,848 for r50 and 24,025,600
for r18 with a 512-d embedding at 112x112; the script prints it, and the
multiply-accumulates per image counted with hooks.

Protocol (as gluon_face.benchmarks.backbones): batch 16 at 112x112, ``--warmup`` untimed
steps per variant, then ``--repeats`` rounds in which every variant runs one
timed step; medians with the min-max over repeats.  A training step is
forward, an ArcFace head over ``--train-classes`` identities (1000, as ours),
cross-entropy, backward and SGD (lr 0.01, momentum 0.9, weight decay 5e-4).
An embedding step is an eval-mode forward under ``torch.inference_mode``.

Variants (``--modes``): ``eager`` (fp32, NCHW), ``cl`` (fp32,
channels_last), ``bf16`` (channels_last + ``torch.autocast('cpu',
bfloat16)`` around the backbone; the head stays fp32 as in insightface's
training script), ``jit`` (embedding only: ``torch.jit.trace`` + ``freeze`` +
``optimize_for_inference``, BatchNorm folded), ``compile`` (``torch.compile``,
inductor; for inference with ``freezing`` on), ``compile-bf16`` (both).

The head (``--head-classes``, B=128, E=512) is written the insightface way:
normalise embeddings and centres, one product, the additive angular margin
on the B target cosines only (cos(t+m) = cos t cos m - sin t sin m, with its
fallback past pi - m), scale 64, cross-entropy; forward + backward, timed in
``eager`` and, with ``compile`` among the modes, compiled.  ``logits`` (and
``compile-logits``) is the same head without the cross-entropy, backward
from a ones gradient of the logits made once before the timed steps: the
protocol of the ``fused`` and ``plain`` rows of
gluon_face.benchmarks.heads.measure_fused_head (its ``fused+ce`` row is the
protocol of ``eager`` and ``compile``).

``--serve`` is the lock-step mode tools/benchmark.py drives: after set-up
and warm-up it prints ``@@bench ready``, then runs one repeat per ``step``
line on stdin (``@@bench done``), and prints ``@@bench result <json>`` on
``finish``.  Logs go to stderr.
"""
import argparse
import importlib.util
import json
import math
import os
import sys
import time


def _shared(name):
    """``gluon_face/benchmarks/<name>.py`` of this source tree, loaded by its path."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "gluon_face", "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_benchmark_torch_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_timing, _memory, _text = _shared("timing"), _shared("memory"), _shared("text")
timed, summarize_times = _timing.timed, _timing.summarize_times
peak_rss_bytes, MIB = _memory.peak_rss_bytes, _memory.MIB
comma_list, int_list, parse_or_status = _text.comma_list, _text.int_list, _text.parse_or_status
text_table, describe_row = _text.text_table, _text.describe_row

PREFIX = "@@bench"
#: insightface's IR-ResNet units per stage.
LAYERS = {"faceresnet18": (2, 2, 2, 2), "faceresnet34": (3, 4, 6, 3),
          "faceresnet50": (3, 4, 14, 3), "faceresnet100": (3, 13, 30, 3)}
WIDTHS = (64, 64, 128, 256, 512)
BACKBONE_MODES = ("eager", "cl", "bf16", "jit", "compile", "compile-bf16")
TRAIN_MODES = ("eager", "cl", "bf16", "compile", "compile-bf16")
DEFAULT_MODES = ("eager", "cl", "bf16", "jit", "compile")
BN_EPS = 1e-5  # insightface's PyTorch iresnet (its MXNet models use 2e-5)


def _log(text):
    print(f"[{time.strftime('%H:%M:%S')}] torch: {text}", file=sys.stderr, flush=True)


def build_modules():
    """The model classes (defined once torch is imported)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class IRUnit(nn.Module):
        """Improved residual unit: BN-conv3x3-BN-PReLU-conv3x3(stride)-BN + shortcut."""

        def __init__(self, cin, cout, stride, project):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(cin, eps=BN_EPS)
            self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
            self.act = nn.PReLU(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout, eps=BN_EPS)
            self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                           nn.BatchNorm2d(cout, eps=BN_EPS))
                             if project else None)

        def forward(self, x):
            y = self.bn3(self.conv2(self.act(self.bn2(self.conv1(self.bn1(x))))))
            return y + (x if self.shortcut is None else self.shortcut(x))

    class IResNet(nn.Module):
        """IR-ResNet with the "E" output; input (B, 3, H, W), output (B, emb_size)."""

        def __init__(self, layers, emb_size=512, image_size=112, dropout=0.0):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, WIDTHS[0], 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(WIDTHS[0], eps=BN_EPS),
                                      nn.PReLU(WIDTHS[0]))
            stages, cin = [], WIDTHS[0]
            for n, cout in zip(layers, WIDTHS[1:]):
                units = [IRUnit(cin, cout, 2, True)]
                units += [IRUnit(cout, cout, 1, False) for _ in range(n - 1)]
                stages.append(nn.Sequential(*units))
                cin = cout
            self.stages = nn.Sequential(*stages)
            side = image_size // 2 ** len(layers)
            self.bn = nn.BatchNorm2d(cin, eps=BN_EPS)
            self.dropout = nn.Dropout(dropout)
            self.fc = nn.Linear(cin * side * side, emb_size)
            self.features = nn.BatchNorm1d(emb_size, eps=BN_EPS)
            nn.init.ones_(self.features.weight)
            self.features.weight.requires_grad = False  # insightface freezes this scale
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.xavier_uniform_(m.weight)

        def forward(self, x):
            x = self.bn(self.stages(self.stem(x)))
            return self.features(self.fc(self.dropout(torch.flatten(x, 1))))

    class ArcFace(nn.Module):
        """Logits (B, C) with the additive angular margin on the target class only."""

        def __init__(self, emb_size, num_classes, s=64.0, m=0.5):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(num_classes, emb_size) * 0.01)
            self.s, self.cos_m, self.sin_m = s, math.cos(m), math.sin(m)
            self.th, self.mm = math.cos(math.pi - m), math.sin(math.pi - m) * m

        def forward(self, x, labels):
            cos = F.linear(F.normalize(x), F.normalize(self.weight)).clamp(-1.0, 1.0)
            rows = torch.arange(x.shape[0], device=x.device)
            t = cos[rows, labels]
            sin = torch.sqrt((1.0 - t * t).clamp(min=1e-12))
            phi = t * self.cos_m - sin * self.sin_m
            phi = torch.where(t > self.th, phi, t - self.mm)
            cos = cos.index_put((rows, labels), phi)
            return cos * self.s

    return IResNet, ArcFace


def count_macs(net, x):
    """Multiply-accumulates per image of the convolutions and linear layers (hooks)."""
    import torch
    from torch import nn

    total = [0]

    def hook(module, inputs, out):
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels
            total[0] += out[0].numel() * k // module.groups
        else:
            total[0] += out[0].numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = net.training
    net.eval()
    with torch.inference_mode():
        net(x[:1])
    net.train(was_training)
    for h in handles:
        h.remove()
    return total[0]


class BackboneJob:
    """Set-up, warm-up and one-repeat steps of every variant of one network."""

    def __init__(self, name, args):
        import torch

        IResNet, ArcFace = build_modules()
        self.name, self.args = name, args
        self.kind = "backbone"
        b, size = args.batch_size, args.image_size
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(b, 3, size, size, generator=gen)
        y = torch.randint(0, args.train_classes, (b,), generator=gen)
        torch.manual_seed(0)
        reference = IResNet(LAYERS[name], args.emb_size, size)
        # all parameters, as ours counts them (the frozen scale of the last BN included)
        self.params = sum(p.numel() for p in reference.parameters())
        self.trainable = sum(p.numel() for p in reference.parameters() if p.requires_grad)
        self.bn_stats = sum(bf.numel() for n, bf in reference.named_buffers() if "running" in n)
        self.macs = count_macs(reference, x)
        _log(f"{name}: {self.params:,} parameters ({self.trainable:,} trainable), "
             f"{self.macs / 1e9:.2f} GMAC/image")
        state = reference.state_dict()
        self.steps, self.rss, self.added = {}, {}, {}
        cl = torch.channels_last

        def fresh(train, channels_last):
            net = IResNet(LAYERS[name], args.emb_size, size)
            net.load_state_dict(state)
            net.train(train)
            return net.to(memory_format=cl) if channels_last else net

        if not args.no_embed:
            for mode in args.modes:
                before = peak_rss_bytes() / MIB
                self._warm(("embed", mode), self._embedder(mode, fresh, x), before)
        if not args.no_train:
            for mode in args.modes:
                if mode not in TRAIN_MODES:
                    continue
                before = peak_rss_bytes() / MIB
                net = fresh(True, mode != "eager")
                head = ArcFace(args.emb_size, args.train_classes)
                opt = torch.optim.SGD(list(net.parameters()) + list(head.parameters()),
                                      lr=0.01, momentum=0.9, weight_decay=5e-4)
                bf16 = mode.endswith("bf16")
                if mode.startswith("compile"):
                    net, head = torch.compile(net), torch.compile(head)
                xin = x.contiguous(memory_format=cl) if mode != "eager" else x

                def run(net=net, head=head, opt=opt, xin=xin, bf16=bf16):
                    opt.zero_grad(set_to_none=True)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        emb = net(xin)
                    loss = torch.nn.functional.cross_entropy(head(emb.float(), y), y)
                    loss.backward()
                    opt.step()
                self._warm(("train", mode), run, before)

    def _embedder(self, mode, fresh, x):
        import torch

        cl = torch.channels_last
        if mode == "eager":
            net, xin = fresh(False, False), x
        else:
            net, xin = fresh(False, True), x.contiguous(memory_format=cl)
        bf16 = mode.endswith("bf16")
        if mode == "jit":
            with torch.inference_mode(False), torch.no_grad():
                traced = torch.jit.trace(net, xin)
                net = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        elif mode.startswith("compile"):
            import torch._inductor.config as inductor_config

            inductor_config.freezing = True  # fold weights/BN into the inference graph
            net = torch.compile(net)

        def run(net=net, xin=xin, bf16=bf16):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                        enabled=bf16):
                net(xin)
        return run

    def _warm(self, key, run, before):
        # compiled and traced variants specialise on the first calls: two untimed steps
        n = self.args.warmup + (1 if key[1] in ("jit", "compile", "compile-bf16") else 0)
        for i in range(max(n, 1)):
            t = timed(run)
            if i == 0:
                _log(f"{self.name} {key[0]}/{key[1]}: first step {t:.1f} s")
        self.rss[key] = peak_rss_bytes() / MIB
        self.added[key] = self.rss[key] - before
        self.steps[key] = run
        self.times = {k: [] for k in self.steps}

    def step(self):
        """One timed step of every variant; the step times (s)."""
        b = self.args.batch_size
        for key, run in self.steps.items():
            self.times[key].append(timed(run))
            self.rss[key] = max(self.rss[key], peak_rss_bytes() / MIB)
        _log(f"{self.name} repeat {len(next(iter(self.times.values())))}: " + ", ".join(
            f"{t}/{m} {b / v[-1]:.2f} img/s" for (t, m), v in self.times.items()))

    def rows(self):
        b, rows, base = self.args.batch_size, [], {}
        for (task, mode), t in self.times.items():
            s = summarize_times(t, work=b)
            gflop = 2.0 * self.macs * (3.0 if task == "train" else 1.0) / 1e9
            base.setdefault(task, s["rate"])
            rows.append({
                "framework": "torch", "network": self.name, "task": task, "mode": mode,
                "batch_size": b, "image_size": self.args.image_size,
                "images_s": s["rate"], "images_s_min": s["rate_min"],
                "images_s_max": s["rate_max"], "step_s": s["step_s"],
                "step_s_min": s["step_s_min"], "step_s_max": s["step_s_max"],
                "repeats": s["repeats"], "gflop_per_image": gflop,
                "gflops": gflop * s["rate"], "speedup": s["rate"] / base[task],
                "params": self.params, "trainable_params": self.trainable,
                "bn_running_stats": self.bn_stats,
                "macs_per_image": self.macs, "peak_rss_mib": self.rss[(task, mode)],
                "rss_added_mib": self.added[(task, mode)]})
        return rows


class HeadJob:
    """The ArcFace head, forward + backward, at each class count."""

    def __init__(self, args):
        import torch

        _, ArcFace = build_modules()
        self.args, self.kind = args, "head"
        gen = torch.Generator().manual_seed(2)
        self.steps, self.times, self.rss, self.added = {}, {}, {}, {}
        modes = ["eager", "logits"] + (["compile", "compile-logits"] if any(
            m.startswith("compile") for m in args.modes) else [])
        b, e = args.head_batch, args.emb_size
        for classes in args.head_classes:
            x = torch.randn(b, e, generator=gen).requires_grad_()
            y = torch.randint(0, classes, (b,), generator=gen)
            grad = torch.ones(b, classes)  # the logits' gradient, made once (as ours)
            torch.manual_seed(classes)
            for mode in modes:
                before = peak_rss_bytes() / MIB
                head = ArcFace(e, classes)
                fn = torch.compile(head) if mode.startswith("compile") else head

                ce = not mode.endswith("logits")

                def run(fn=fn, head=head, x=x, y=y, ce=ce, grad=grad):
                    head.weight.grad = x.grad = None
                    out = fn(x, y)
                    if ce:
                        torch.nn.functional.cross_entropy(out, y).backward()
                    else:
                        out.backward(grad)
                key = (classes, mode)
                for i in range(max(args.warmup, 1) + mode.startswith("compile")):
                    t = timed(run)
                    if i == 0:
                        _log(f"head C={classes} {mode}: first step {t:.2f} s")
                self.rss[key] = peak_rss_bytes() / MIB
                self.added[key] = self.rss[key] - before
                self.steps[key], self.times[key] = run, []

    def step(self, classes=None):
        """One timed step of every variant (of ``classes`` only, if given)."""
        for key, run in self.steps.items():
            if classes is None or key[0] == classes:
                self.times[key].append(timed(run))
                self.rss[key] = max(self.rss[key], peak_rss_bytes() / MIB)
        _log("head " + ", ".join(f"C={c} {m} {v[-1]:.3f} s"
                                 for (c, m), v in self.times.items()
                                 if v and (classes is None or c == classes)))

    def rows(self):
        rows = []
        b, e = self.args.head_batch, self.args.emb_size
        for (classes, mode), t in self.times.items():
            if not t:
                continue
            s = summarize_times(t)
            flop = 6.0 * b * classes * e
            rows.append({
                "framework": "torch", "workload": "head", "num_classes": classes,
                "emb_size": e, "batch_size": b, "mode": mode,
                "cross_entropy": not mode.endswith("logits"), "step_s": s["step_s"],
                "step_s_min": s["step_s_min"], "step_s_max": s["step_s_max"],
                "repeats": s["repeats"], "gflops": flop / s["step_s"] / 1e9,
                "peak_rss_mib": self.rss[(classes, mode)],
                "rss_added_mib": self.added[(classes, mode)]})
        return rows


def _parse(argv):
    parser = argparse.ArgumentParser(prog="benchmark_torch",
                                     description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--networks", type=comma_list,
                        default=["faceresnet18", "faceresnet50"],
                        help=f"comma-separated among {','.join(LAYERS)}; 'none' for the head "
                        "only (default faceresnet18,faceresnet50)")
    parser.add_argument("--modes", type=comma_list, default=list(DEFAULT_MODES),
                        help=f"comma-separated among {','.join(BACKBONE_MODES)} "
                        f"(default {','.join(DEFAULT_MODES)})")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step (16)")
    parser.add_argument("--image-size", type=int, default=112, help="image side (112)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per variant (3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (1)")
    parser.add_argument("--no-train", action="store_true", help="embedding only")
    parser.add_argument("--no-embed", action="store_true", help="training only")
    parser.add_argument("--train-classes", type=int, default=1000,
                        help="identities of the training step's head (1000, as ours)")
    parser.add_argument("--head-classes", type=int_list(), default=[10000, 100000],
                        help="class counts for the head, '' for none (default 10000,100000)")
    parser.add_argument("--head-batch", type=int, default=128, help="head batch (128)")
    parser.add_argument("--emb-size", type=int, default=512, help="embedding size (512)")
    parser.add_argument("--threads", type=int,
                        default=int(os.environ.get("OMP_NUM_THREADS") or 2),
                        help="torch.set_num_threads (default $OMP_NUM_THREADS, else 2)")
    parser.add_argument("--json", metavar="OUT", help="also write the rows as JSON")
    parser.add_argument("--serve", action="store_true",
                        help="lock-step mode for tools/benchmark.py (one network or the head)")
    args = parser.parse_args(argv)
    if args.networks == ["none"]:
        args.networks = []
    bad = [n for n in args.networks if n not in LAYERS]
    if bad:
        parser.error(f"--networks: unknown {bad}; valid: {', '.join(LAYERS)}")
    bad = [m for m in args.modes if m not in BACKBONE_MODES]
    if bad or not args.modes:
        parser.error(f"--modes: unknown {bad or args.modes}; valid: {', '.join(BACKBONE_MODES)}")
    for name in ("batch_size", "image_size", "repeats", "head_batch", "emb_size", "threads",
                 "train_classes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    bad = [n for n in args.networks if args.image_size % 2 ** len(LAYERS[n])]
    if bad:
        parser.error(f"--image-size must be a multiple of 16, got {args.image_size}")
    if args.serve and len(args.networks) + bool(args.head_classes) != 1:
        parser.error("--serve takes one network or the head (--networks none)")
    return args


def _info(args):
    import torch

    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn": torch.backends.mkldnn.is_available()}


def _say(*parts):
    print(PREFIX, *parts, flush=True)


def serve(args):
    """Lock-step protocol with tools/benchmark.py over stdin/stdout."""
    job = BackboneJob(args.networks[0], args) if args.networks else HeadJob(args)
    _say("ready")
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "step":
            job.step(*(int(w) for w in words[1:]))
            _say("done")
        elif words[0] == "finish":
            _say("result", json.dumps({"info": _info(args), "rows": job.rows()}))
            return 0
    return 1  # stdin closed without "finish"


def format_table(rows):
    """Torch rows as an aligned text table.

    No memory column: every variant is set up in the one process, whose peak
    only grows (``rss_added_mib`` stays in the JSON, as that process saw it).
    """
    head = ["workload", "task", "variant", "median (min-max)", "x", "GFLOP/s"]
    lines = [describe_row(r) + ["" if r.get("workload") == "head" else f"{r['speedup']:.2f}",
                                f"{r['gflops']:.1f}"]
             for r in rows]
    return text_table(head, lines)


def main(argv=None):
    args, status = parse_or_status(_parse, argv)
    if args is None:
        return status
    try:
        import torch
    except ImportError as err:
        print(f"benchmark_torch: error: {err} (see the install lines in the docstring)",
              file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    try:
        if args.serve:
            return serve(args)
        rows, params = [], {}
        jobs = [(lambda n=n: BackboneJob(n, args)) for n in args.networks]
        if args.head_classes:
            jobs.append(lambda: HeadJob(args))
        for make in jobs:
            job = make()
            if job.kind == "backbone":
                params[job.name] = (job.params, job.trainable)
            for _ in range(args.repeats):
                job.step()
            rows += job.rows()
            del job
    except (ValueError, RuntimeError, OSError) as err:
        text = str(err).strip().splitlines()
        print(f"benchmark_torch: error: {text[0] if text else type(err).__name__}",
              file=sys.stderr)
        return 1
    info = _info(args)
    print(f"torch {info['torch']} ({info['cpu_capability']}), {info['threads']} threads, "
          f"load average at the start {load[0]:.1f}; {args.repeats} timed steps per variant "
          f"after {args.warmup} warm-up")
    for name, (n, trainable) in params.items():
        print(f"{name}: {n:,} parameters ({trainable:,} trainable; the last BN's scale is "
              f"frozen at 1), {args.image_size}px, embedding {args.emb_size}")
    print(format_table(rows))
    if args.json:
        result = {"args": vars(args), "info": info, "load_average": load[0], "rows": rows}
        tmp = f"{args.json}.tmp{os.getpid()}"
        try:
            with open(tmp, "w") as f:
                json.dump(result, f, indent=2)
            os.replace(tmp, args.json)
        except OSError as err:
            print(f"benchmark_torch: error: --json {args.json}: {err.strerror}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
