"""PyTorch peer of transferlab's 'small' net (packages/nn/src/nets.ts), for
bench/train-vs-pytorch.ts: trains it on synthetic uint8 batches for a fixed number of
steps on --threads threads (default one) and prints one JSON object on stdout.

    /usr/bin/python3 bench/peer/small_net_torch.py --height 28 --width 28 --channels 1 \
        --classes 5 --net-width 0.25 --batch 64 --warmup 3 --steps 20

The net, layer by layer as nets.ts builds it (widths multiplied by --net-width, rounded):
  conv1 5x5 32 'same' relu, pool1 max 3x3 stride 2 'same'
  conv2 5x5 64 'same' relu, pool2 max 3x3 stride 2 'same'
  conv3 3x3 96 'same' relu
  conv4 3x3 96 'same' relu
  conv5 3x3 64 'same' relu, pool5 max 3x3 stride 2 'same'
  flatten, fc6 512 relu, dropout 0.5, fc7 512 relu, dropout 0.5, fc8 classes (logits)
No LRN (the small net's default). He-normal kernels for the layers followed by a ReLU,
Glorot-normal for fc8, zero biases. Softmax cross-entropy; SGD, momentum 0.9, Caffe-style weight
decay on kernels only (train.ts); each step converts the uint8 HWC batch to float
value / 255 - 0.5, as train.ts does.

TensorFlow's 'same' max pooling pads asymmetrically (the extra cell goes at the end) with
cells that never win; PyTorch pads symmetrically. Each pool below is chosen per input size to
cover exactly the same windows: symmetric padding, or ceil_mode for one extra cell at the end;
each pool's output size is checked against TensorFlow's arithmetic when the net is built.

Flatten order differs (tfjs is NHWC, PyTorch NCHW): a permutation of fc6's inputs, the same
work. Keep this file free of anything but torch and the standard library.
"""

import argparse
import json
import math
import os
import platform
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def scaled(units, width):
    # JavaScript's Math.round (half up), as nets.ts uses; Python's round is half to even.
    return max(1, int(math.floor(units * width + 0.5)))


def same_size(size, stride):
    return -(-size // stride)


def same_pool(size, kernel, stride):
    """A MaxPool2d covering TensorFlow's 'same' windows for this input size, and its output size."""
    out = same_size(size, stride)
    total = max((out - 1) * stride + kernel - size, 0)
    before, after = total // 2, total - total // 2
    if before == after:
        pool = nn.MaxPool2d(kernel, stride, padding=before)
    elif after == before + 1:
        # ceil_mode adds the last window, which runs one cell past the input's end: the one
        # extra trailing cell TensorFlow pads with.
        pool = nn.MaxPool2d(kernel, stride, padding=before, ceil_mode=True)
    else:
        raise ValueError(f"no PyTorch pool matches TF 'same' pooling of {size} (pads {before}, {after})")
    got = pool(torch.zeros(1, 1, size, size)).shape[-1]
    if got != out:
        raise ValueError(f"pool on {size}: PyTorch gives {got}, TensorFlow 'same' gives {out}")
    return pool, out


class SmallNet(nn.Module):
    def __init__(self, height, width, channels, classes, net_width, dropout):
        super().__init__()
        c = [scaled(n, net_width) for n in (32, 64, 96, 96, 64)]
        fc = [scaled(n, net_width) for n in (512, 512)]
        if height != width:
            raise ValueError(f"square inputs only (the pools' padding is chosen per size), got {height}x{width}")
        size = height
        self.conv1 = nn.Conv2d(channels, c[0], 5, padding=2)
        self.pool1, size = same_pool(size, 3, 2)
        self.conv2 = nn.Conv2d(c[0], c[1], 5, padding=2)
        self.pool2, size = same_pool(size, 3, 2)
        self.conv3 = nn.Conv2d(c[1], c[2], 3, padding=1)
        self.conv4 = nn.Conv2d(c[2], c[3], 3, padding=1)
        self.conv5 = nn.Conv2d(c[3], c[4], 3, padding=1)
        self.pool5, size = same_pool(size, 3, 2)
        self.fc6 = nn.Linear(c[4] * size * size, fc[0])
        self.fc7 = nn.Linear(fc[0], fc[1])
        self.fc8 = nn.Linear(fc[1], classes)
        self.drop = nn.Dropout(dropout)
        self.final_map = (c[4], size, size)
        for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
            layer = getattr(self, name)
            if name == "fc8":
                nn.init.xavier_normal_(layer.weight)
            else:
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        x = self.pool1(F.relu(self.conv1(x)))
        x = self.pool2(F.relu(self.conv2(x)))
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        x = self.pool5(F.relu(self.conv5(x)))
        x = torch.flatten(x, 1)
        x = self.drop(F.relu(self.fc6(x)))
        x = self.drop(F.relu(self.fc7(x)))
        return self.fc8(x)


def loaded_blas():
    """The BLAS/LAPACK libraries actually mapped into this process (not the build-time claim)."""
    found = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                base = os.path.basename(path).lower()
                if ("blas" in base or "lapack" in base) and path not in found:
                    found.append(path)
    except OSError:
        return []
    return [f"{p} -> {os.path.realpath(p)}" if os.path.realpath(p) != p else p for p in found]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--channels", type=int, required=True)
    parser.add_argument("--classes", type=int, required=True)
    parser.add_argument("--net-width", type=float, default=1.0)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pool", type=int, default=4, help="distinct synthetic batches, cycled")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (torch.set_num_threads)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(args.seed)

    model = SmallNet(args.height, args.width, args.channels, args.classes, args.net_width, args.dropout)

    kernels = [p for n, p in model.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
    optimizer = torch.optim.SGD(
        [{"params": kernels, "weight_decay": args.weight_decay}, {"params": biases, "weight_decay": 0.0}],
        lr=args.lr,
        momentum=args.momentum,
    )

    # Synthetic data as transferlab's loop gets it: uint8 HWC images and int labels.
    generator = torch.Generator().manual_seed(args.seed)
    batches = [
        (
            torch.randint(0, 256, (args.batch, args.height, args.width, args.channels), dtype=torch.uint8, generator=generator),
            torch.randint(0, args.classes, (args.batch,), dtype=torch.int64, generator=generator),
        )
        for _ in range(args.pool)
    ]

    model.train()

    def step(i):
        images, labels = batches[i % len(batches)]
        x = images.to(torch.float32).div_(255.0).sub_(0.5).permute(0, 3, 1, 2).contiguous()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    for i in range(args.warmup):
        step(i)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    loss = float("nan")
    for i in range(args.steps):
        loss = step(args.warmup + i)
    seconds = time.perf_counter() - wall0
    cpu_seconds = time.process_time() - cpu0
    if not math.isfinite(loss):
        raise SystemExit(f"training loss is {loss}")

    images = args.steps * args.batch
    print(json.dumps({
        "images_per_second": images / seconds,
        "images_per_cpu_second": images / cpu_seconds if cpu_seconds > 0 else None,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "steps": args.steps,
        "batch": args.batch,
        "last_loss": loss,
        "parameters": sum(p.numel() for p in model.parameters()),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "blas_build": next((part.split("=", 1)[1] for part in torch.__config__.show().replace(",", "\n").split()
                            if part.startswith("BLAS_INFO=")), "unknown"),
        "blas_loaded": loaded_blas(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
