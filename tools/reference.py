#!/usr/bin/python3
# reference.py: the game model written again in PyTorch, to check and to time the C runtime.
#
# A development tool only: nothing in the build, the programs or the test suite runs
# it or needs PyTorch. It has two commands.
#
#   fixture CKPT OUT [--batch B --seq T --seed S]
#       Reads a checkpoint in the project's own format (weights.h), rebuilds the
#       GPT-2 model from its tensors wte .. lnfb (the GAME noise tensors are not
#       used: noise off), runs forward and backward in float64 on a seeded batch
#       and writes OUT, a checkpoint with the same config and the sections
#         VOCB  copied from CKPT
#         PARM  copied from CKPT, noise tensors included
#         INPT  (B, T) u32 input ids
#         TGTS  (B, T) u32 target ids
#         SHAP  u32 B, T
#         LOGT  (B, T, V) f32 logits
#         LOSS  f32 mean cross-entropy over the B T positions
#         GRAD  f32 d LOSS / d params, laid out as PARM (zeros for the noise tensors)
#       tests/test_parity.c compares the C forward and backward against this file.
#
#   bench [--layers --heads --channels --context --batch --vocab --steps --threads]
#       Times a float32 training step (forward, backward, gradient clipping, AdamW,
#       zero_grad) of the same architecture on the CPU and prints one line
#         reference ms/step MEDIAN tokens/s X threads K blas CORETYPE
#       after the build and BLAS details. Debian's OpenBLAS picks its generic
#       kernel on some CPUs; OPENBLAS_CORETYPE=SkylakeX in the environment forces
#       the AVX-512 one, which can be several times faster.
#
# Model (as game.c): x = wte[tok] + wpe[t]; per block x += attproj(attn(ln1(x))),
# x += fcproj(gelu(fc(ln2(x)))); layernorm eps 1e-5 with the biased variance; GELU
# in its tanh form; causal attention scaled by 1 / sqrt(hs); logits = lnf(x) @ wte^T
# (tied head); loss = mean cross-entropy. Linear layers store W as (out, in).
#
# Run it with the system Python that has torch: /usr/bin/python3 tools/reference.py.
import argparse
import ctypes
import math
import os
import re
import statistics
import struct
import sys
import time
import zlib

import numpy as np
import torch

# ----------------------------------------------------------------------------
# The checkpoint format (weights.h), version 1

MAGIC = b"GAMECKPT"
VERSION = 1
HEADER_SIZE = 64
ENTRY_SIZE = 24
ALIGN = 8
MAX_SECTIONS = 16

CONFIG_FIELDS = ("context", "vocab_size", "layers", "heads", "channels")


class FormatError(Exception):
    pass


def align_up(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def ckpt_read(path):
    """Reads and checks a checkpoint; returns (config dict, list of (tag, bytes))."""
    with open(path, "rb") as f:
        buf = f.read()

    # header: magic, version, sizes, config, CRCs
    if len(buf) < HEADER_SIZE:
        raise FormatError(f"{path}: {len(buf)} bytes, shorter than the 64-byte header")
    if buf[0:8] != MAGIC:
        raise FormatError(f"{path}: not a game checkpoint (bad magic)")
    version, header_size = struct.unpack_from("<II", buf, 8)
    if version != VERSION:
        raise FormatError(f"{path}: format version {version}, this tool reads {VERSION}")
    if header_size != HEADER_SIZE:
        raise FormatError(f"{path}: header size {header_size}, expected {HEADER_SIZE}")
    if zlib.crc32(buf[0:60]) != struct.unpack_from("<I", buf, 60)[0]:
        raise FormatError(f"{path}: header checksum mismatch (file damaged)")
    values = struct.unpack_from("<5I", buf, 16)
    config = dict(zip(CONFIG_FIELDS, values))
    if min(values) < 1:
        raise FormatError(f"{path}: a config field is zero: {config}")
    n, = struct.unpack_from("<I", buf, 36)
    file_size, = struct.unpack_from("<Q", buf, 40)
    table_crc, = struct.unpack_from("<I", buf, 48)
    if buf[52:60] != bytes(8):
        raise FormatError(f"{path}: reserved header bytes are not zero")
    if n > MAX_SECTIONS:
        raise FormatError(f"{path}: {n} sections, at most {MAX_SECTIONS} allowed")
    if file_size != len(buf):
        raise FormatError(f"{path}: header says {file_size} bytes, file has {len(buf)}")
    table_end = HEADER_SIZE + ENTRY_SIZE * n
    if table_end > len(buf):
        raise FormatError(f"{path}: truncated section table")
    if zlib.crc32(buf[HEADER_SIZE:table_end]) != table_crc:
        raise FormatError(f"{path}: section table checksum mismatch (file damaged)")

    # sections, each at the canonical place, padding zero, payload CRC right
    sections = []
    pos = table_end
    for i in range(n):
        e = HEADER_SIZE + ENTRY_SIZE * i
        tag = buf[e:e + 4]
        crc, offset, size = struct.unpack_from("<IQQ", buf, e + 4)
        if not all(33 <= b <= 126 for b in tag):
            raise FormatError(f"{path}: section {i} has an unprintable tag {tag!r}")
        tag = tag.decode("ascii")
        if any(t == tag for t, _ in sections):
            raise FormatError(f"{path}: duplicate section {tag}")
        if offset != pos or offset + size > len(buf):
            raise FormatError(f"{path}: section {tag} is misplaced or truncated")
        data = buf[offset:offset + size]
        if zlib.crc32(data) != crc:
            raise FormatError(f"{path}: section {tag} checksum mismatch (file damaged)")
        end = align_up(offset + size)
        if end > len(buf) or buf[offset + size:end] != bytes(end - offset - size):
            raise FormatError(f"{path}: section {tag} has bad padding")
        sections.append((tag, data))
        pos = end
    if pos != len(buf):
        raise FormatError(f"{path}: {len(buf) - pos} bytes of trailing data")
    return config, sections


def ckpt_write(path, config, sections):
    """Writes config and sections [(tag, bytes)] as a canonical checkpoint."""
    if len(sections) > MAX_SECTIONS:
        raise FormatError(f"{len(sections)} sections, at most {MAX_SECTIONS}")
    n = len(sections)

    # section table and payloads, each payload padded to 8 bytes
    table = b""
    body = b""
    offset = HEADER_SIZE + ENTRY_SIZE * n
    for tag, data in sections:
        tag_bytes = tag.encode("ascii")
        if len(tag_bytes) != 4 or not all(33 <= b <= 126 for b in tag_bytes):
            raise FormatError(f"bad section tag {tag!r}")
        table += tag_bytes + struct.pack("<IQQ", zlib.crc32(data), offset, len(data))
        padded = data + bytes(align_up(len(data)) - len(data))
        body += padded
        offset += len(padded)

    # header, with its CRC over bytes 0 .. 59
    header = MAGIC + struct.pack("<II", VERSION, HEADER_SIZE)
    header += struct.pack("<5I", *(config[k] for k in CONFIG_FIELDS))
    header += struct.pack("<IQI", n, offset, zlib.crc32(table)) + bytes(8)
    header += struct.pack("<I", zlib.crc32(header))
    assert len(header) == HEADER_SIZE

    # write beside the target, then rename, so a failure leaves no half file
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(header + table + body)
    os.replace(tmp, path)


def section(sections, tag, path):
    for t, data in sections:
        if t == tag:
            return data
    raise FormatError(f"{path}: no section {tag}")


# ----------------------------------------------------------------------------
# Parameter layout (game.h): every tensor stacked over the layers, in this order

PARAM_NAMES = ("wte", "wpe", "ln1w", "ln1b", "qkvw", "qkvb", "attprojw", "attprojb",
               "ln2w", "ln2b", "fcw", "fcb", "fcprojw", "fcprojb", "lnfw", "lnfb",
               "noise_att", "noise_mlp", "noise_logit", "noise_head")
NUM_BASE = 16  # wte .. lnfb, the GPT-2 model proper


def param_shapes(cfg):
    V, C, L = cfg["vocab_size"], cfg["channels"], cfg["layers"]
    T, NH = cfg["context"], cfg["heads"]
    return [(V, C), (T, C), (L, C), (L, C), (L, 3 * C, C), (L, 3 * C), (L, C, C), (L, C),
            (L, C), (L, C), (L, 4 * C, C), (L, 4 * C), (L, C, 4 * C), (L, C), (C,), (C,),
            (L,), (L,), (L, NH), (V, C)]


def split_params(flat, cfg):
    """Views of the flat parameter array (num_params) as the named tensors."""
    out, pos = {}, 0
    for name, shape in zip(PARAM_NAMES, param_shapes(cfg)):
        size = math.prod(shape)
        out[name] = flat[pos:pos + size].reshape(shape)
        pos += size
    if pos != flat.size:
        raise FormatError(f"PARM holds {flat.size} floats, the config needs {pos}")
    return out


# ----------------------------------------------------------------------------
# The model


def layernorm(x, w, b):
    # biased variance, eps inside the square root, as layernorm_forward
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-5) * w + b


def gelu(x):
    # tanh form, as GPT-2
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def attention(qkv, NH):
    # qkv (B, T, 3C) -> out (B, T, C); causal, scaled by 1 / sqrt(hs)
    B, T, C3 = qkv.shape
    C = C3 // 3
    hs = C // NH
    q, k, v = qkv.split(C, dim=2)
    q = q.view(B, T, NH, hs).transpose(1, 2)  # (B, NH, T, hs)
    k = k.view(B, T, NH, hs).transpose(1, 2)
    v = v.view(B, T, NH, hs).transpose(1, 2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (B, NH, T, T)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v  # (B, NH, T, hs)
    return y.transpose(1, 2).reshape(B, T, C)


def forward(p, inputs, targets, cfg):
    """p: dict of tensors; inputs, targets (B, T) int64. Returns logits, mean loss."""
    B, T = inputs.shape
    L, NH, V = cfg["layers"], cfg["heads"], cfg["vocab_size"]
    linear = torch.nn.functional.linear

    # embeddings, then the blocks, then the final layernorm and the tied head
    x = p["wte"][inputs] + p["wpe"][:T]
    for l in range(L):
        h = layernorm(x, p["ln1w"][l], p["ln1b"][l])
        h = attention(linear(h, p["qkvw"][l], p["qkvb"][l]), NH)
        x = x + linear(h, p["attprojw"][l], p["attprojb"][l])
        h = layernorm(x, p["ln2w"][l], p["ln2b"][l])
        h = gelu(linear(h, p["fcw"][l], p["fcb"][l]))
        x = x + linear(h, p["fcprojw"][l], p["fcprojb"][l])
    x = layernorm(x, p["lnfw"], p["lnfb"])
    logits = x @ p["wte"].t()  # (B, T, V)
    loss = torch.nn.functional.cross_entropy(logits.view(-1, V), targets.reshape(-1))
    return logits, loss


# ----------------------------------------------------------------------------
# fixture


def cmd_fixture(args):
    cfg, sections = ckpt_read(args.ckpt)
    V, context = cfg["vocab_size"], cfg["context"]
    B, T = args.batch, args.seq
    if not 1 <= T <= context:
        sys.exit(f"error: --seq {T} must be in 1..{context} (the checkpoint's context)")
    if B < 1:
        sys.exit("error: --batch must be at least 1")
    vocab = section(sections, "VOCB", args.ckpt)
    parm = section(sections, "PARM", args.ckpt)
    if len(vocab) != 4 * V:
        sys.exit(f"error: {args.ckpt}: VOCB holds {len(vocab)} bytes, expected {4 * V}")

    # the base tensors as float64 leaves; the noise tensors stay out of the graph
    flat = np.frombuffer(parm, dtype="<f4").astype(np.float64)
    views = split_params(flat, cfg)
    p = {name: torch.tensor(views[name], dtype=torch.float64, requires_grad=True)
         for name in PARAM_NAMES[:NUM_BASE]}

    # a fixed batch: B windows of T + 1 ids, inputs and the next ids as targets
    rng = np.random.default_rng(args.seed)
    ids = rng.integers(0, V, size=(B, T + 1), dtype=np.int64)
    inputs = torch.from_numpy(ids[:, :T].copy())
    targets = torch.from_numpy(ids[:, 1:].copy())

    # forward and backward in float64
    logits, loss = forward(p, inputs, targets, cfg)
    loss.backward()

    # the gradient laid out as PARM, zeros for the noise tensors
    grads = []
    for name, shape in zip(PARAM_NAMES, param_shapes(cfg)):
        if name in p:
            grads.append(p[name].grad.detach().numpy().reshape(-1))
        else:
            grads.append(np.zeros(math.prod(shape)))
    grad = np.concatenate(grads)

    def f32(a):
        return np.asarray(a, dtype="<f4").tobytes()

    def u32(a):
        return np.asarray(a, dtype="<u4").tobytes()

    out = [("VOCB", vocab), ("PARM", parm), ("INPT", u32(inputs.numpy())),
           ("TGTS", u32(targets.numpy())), ("SHAP", u32([B, T])),
           ("LOGT", f32(logits.detach().numpy())), ("LOSS", f32([loss.item()])),
           ("GRAD", f32(grad))]
    ckpt_write(args.out, cfg, out)
    print(f"wrote {args.out}: config {cfg}, batch {B}x{T}, loss {loss.item():.6f}, "
          f"{os.path.getsize(args.out)} bytes")


# ----------------------------------------------------------------------------
# bench


def openblas():
    """The OpenBLAS library torch uses, or None: found among the loaded libraries."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            lib.openblas_get_config.restype = ctypes.c_char_p
            return lib, path
        except (OSError, AttributeError):
            continue
    return None


class Bench(torch.nn.Module):
    """The same architecture as game.c, float32, GPT-2 initialisation."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        L = cfg["layers"]
        self.p = torch.nn.ParameterDict()
        for name, shape in zip(PARAM_NAMES[:NUM_BASE], param_shapes(cfg)[:NUM_BASE]):
            t = torch.zeros(shape)
            if name in ("ln1w", "ln2w", "lnfw"):
                t.fill_(1.0)
            elif name in ("wte", "wpe", "qkvw", "fcw"):
                t.normal_(0.0, 0.02)
            elif name in ("attprojw", "fcprojw"):
                t.normal_(0.0, 0.02 / math.sqrt(2 * L))
            self.p[name] = torch.nn.Parameter(t)

    def forward(self, inputs, targets):
        return forward(self.p, inputs, targets, self.cfg)


def cmd_bench(args):
    torch.set_num_threads(args.threads)
    blas = openblas()
    if blas:
        # OpenBLAS keeps its own thread pool; give it the same count
        blas[0].openblas_set_num_threads(args.threads)
        corename = blas[0].openblas_get_corename().decode()
        print(f"openblas: {blas[1]}")
        print(f"openblas config: {blas[0].openblas_get_config().decode()}")
    else:
        corename = "none"
    coretype = os.environ.get("OPENBLAS_CORETYPE", "")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"OPENBLAS_CORETYPE={coretype or '(unset)'}, kernel {corename}")
    if args.verbose:
        print(torch.__config__.show())
        print(torch.__config__.parallel_info())
    else:
        info = re.findall(r"(?:BLAS_INFO|LAPACK_INFO|CPU capability usage)[=:] ?\w+",
                          torch.__config__.show())
        print("torch build:", ", ".join(info))

    # model, optimizer (the C trainer's defaults), a fixed random batch
    cfg = {"context": args.context, "vocab_size": args.vocab, "layers": args.layers,
           "heads": args.heads, "channels": args.channels}
    torch.manual_seed(1337)
    model = Bench(cfg)
    decayed = ("wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw")
    decay = [t for n, t in model.p.items() if n in decayed]
    rest = [t for n, t in model.p.items() if n not in decayed]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99), eps=1e-8)
    B, T = args.batch, args.context
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, args.vocab, (B, T + 1), generator=gen)
    inputs, targets = ids[:, :T].contiguous(), ids[:, 1:].contiguous()

    def step():
        _, loss = model(inputs, targets)
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    # warmup, then the median of timed steps
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1000.0)
    med = statistics.median(times)
    nparams = sum(t.numel() for t in model.parameters())
    print(f"config: L={args.layers} NH={args.heads} C={args.channels} T={T} B={B} "
          f"V={args.vocab}, {nparams} params, {args.steps} steps after {args.warmup} "
          f"warmup, min {min(times):.2f} ms")
    print(f"reference ms/step {med:.2f} tokens/s {B * T / (med / 1000.0):.0f} "
          f"threads {args.threads} blas {coretype or 'default'}:{corename}")


# ----------------------------------------------------------------------------
# main


def main():
    ap = argparse.ArgumentParser(description="PyTorch reference of the game model "
                                 "(development tool)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    f = sub.add_parser("fixture", help="write a forward/backward reference file")
    f.add_argument("ckpt", help="checkpoint to read (from ./train)")
    f.add_argument("out", help="reference file to write")
    f.add_argument("--batch", type=int, default=3, help="B (default 3)")
    f.add_argument("--seq", type=int, default=8, help="T, at most the context (default 8)")
    f.add_argument("--seed", type=int, default=1234, help="seed of the batch (default 1234)")

    b = sub.add_parser("bench", help="time a float32 training step")
    b.add_argument("--layers", type=int, default=4)
    b.add_argument("--heads", type=int, default=4)
    b.add_argument("--channels", type=int, default=128)
    b.add_argument("--context", type=int, default=64)
    b.add_argument("--batch", type=int, default=12)
    b.add_argument("--vocab", type=int, default=65, help="V (default 65, tinyshakespeare)")
    b.add_argument("--steps", type=int, default=50, help="timed steps (default 50)")
    b.add_argument("--warmup", type=int, default=5, help="untimed steps (default 5)")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--clip", type=float, default=1.0,
                   help="gradient-norm clip as ./train, 0 for none (default 1)")
    b.add_argument("--verbose", action="store_true", help="print torch.__config__ in full")

    args = ap.parse_args()
    try:
        if args.cmd == "fixture":
            cmd_fixture(args)
        else:
            cmd_bench(args)
    except FormatError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
