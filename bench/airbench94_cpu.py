"""airbench94 itself on this CPU: what airbench's recipe reaches here, measured rather than assumed.

    .venv/bin/python bench/airbench94_cpu.py                    # seeds 0, 1, 2 in float32, 9.9 epochs each
    .venv/bin/python bench/airbench94_cpu.py --precision bf16   # the forward passes under bf16 autocast
    .venv/bin/python bench/airbench94_cpu.py --quick            # 256 training images, 2 epochs, seed 0: a smoke run

KellerJordan/cifar10-airbench's legacy/airbench94.py (94.01% mean over 1,000 runs in 3.83 s on an A100),
ported with the fewest changes, each marked `CPU port:`: the device is the CPU; the weights are float32,
with `--precision bf16` the forward passes run under bf16 autocast where airbench runs fp16 weights;
the images are read from the project's CIFAR-10 pickles (data/cifar10.py's reader) instead of
torchvision's download; the clock is time.perf_counter instead of CUDA events; each run seeds torch with
its seed. Everything else (hyperparameters, network, whitening, lookahead, alternating flips, reflect
padding, drop-last, schedule, test-time augmentation, what is timed) is airbench's code as it is, so its
time counts what airbench's counts: the whitening fit, training and the final TTA evaluation, not the
per-epoch evaluations.
"""

from __future__ import annotations

import statistics
import time
from math import ceil

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from torch import nn

from common import Row, cifar_root, main, parser
from visionlab.data.cifar10 import FOLDER, TEST_FILES, TRAIN_FILES, read_batches

#############################################
#            Setup/Hyperparameters          #
#############################################

hyp = {
    "opt": {
        "train_epochs": 9.9,
        "batch_size": 1024,
        "lr": 11.5,  # learning rate per 1024 examples
        "momentum": 0.85,
        "weight_decay": 0.0153,  # weight decay per 1024 examples (decoupled from learning rate)
        "bias_scaler": 64.0,  # scales up learning rate (but not weight decay) for BatchNorm biases
        "label_smoothing": 0.2,
        "whiten_bias_epochs": 3,  # how many epochs to train the whitening layer bias before freezing
    },
    "aug": {
        "flip": True,
        "translate": 2,
    },
    "net": {
        "widths": {
            "block1": 64,
            "block2": 256,
            "block3": 256,
        },
        "batchnorm_momentum": 0.6,
        "scaling_factor": 1 / 9,
        "tta_level": 2,  # the level of test-time augmentation: 0=none, 1=mirror, 2=mirror+translate
    },
}
# CPU port: --quick's sizes, a smoke run that checks the port runs, not what it reaches
QUICK = {"train_size": 256, "test_size": 50, "batch_size": 256, "train_epochs": 2, "seeds": "0"}
PRECISIONS = {"32": None, "bf16": torch.bfloat16}
A100 = {"acc": 0.9401, "seconds": 3.83}  # airbench94's README and header: n=1,000 runs, A100-SXM4-80GB

#############################################
#                DataLoader                 #
#############################################

CIFAR_MEAN = torch.tensor((0.4914, 0.4822, 0.4465))
CIFAR_STD = torch.tensor((0.2470, 0.2435, 0.2616))


def batch_flip_lr(inputs):
    flip_mask = (torch.rand(len(inputs), device=inputs.device) < 0.5).view(-1, 1, 1, 1)
    return torch.where(flip_mask, inputs.flip(-1), inputs)


def batch_crop(images, crop_size):
    r = (images.size(-1) - crop_size) // 2
    shifts = torch.randint(-r, r + 1, size=(len(images), 2), device=images.device)
    images_out = torch.empty((len(images), 3, crop_size, crop_size), device=images.device, dtype=images.dtype)
    # The two cropping methods in this if-else produce equivalent results, but the second is faster for r > 2.
    if r <= 2:
        for sy in range(-r, r + 1):
            for sx in range(-r, r + 1):
                mask = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
                images_out[mask] = images[mask, :, r + sy : r + sy + crop_size, r + sx : r + sx + crop_size]
    else:
        images_tmp = torch.empty(
            (len(images), 3, crop_size, crop_size + 2 * r), device=images.device, dtype=images.dtype
        )
        for s in range(-r, r + 1):
            mask = shifts[:, 0] == s
            images_tmp[mask] = images[mask, :, r + s : r + s + crop_size, :]
        for s in range(-r, r + 1):
            mask = shifts[:, 1] == s
            images_out[mask] = images_tmp[mask, :, :, r + s : r + s + crop_size]
    return images_out


class CifarLoader:
    # CPU port: given the images ([N, 3, 32, 32] uint8, read from the pickles) instead of a path to download to
    def __init__(self, images, labels, train=True, batch_size=500, aug=None, drop_last=None, shuffle=None):
        self.images, self.labels = images, labels
        # CPU port: float32, not half; already [N, C, H, W]
        self.images = (self.images.float() / 255).to(memory_format=torch.channels_last)
        self.normalize = T.Normalize(CIFAR_MEAN, CIFAR_STD)
        self.proc_images = {}  # Saved results of image processing to be done on the first epoch
        self.epoch = 0

        self.aug = aug or {}
        for k in self.aug.keys():
            assert k in ["flip", "translate"], f"Unrecognized key: {k}"

        self.batch_size = batch_size
        self.drop_last = train if drop_last is None else drop_last
        self.shuffle = train if shuffle is None else shuffle

    def __len__(self):
        return len(self.images) // self.batch_size if self.drop_last else ceil(len(self.images) / self.batch_size)

    def __iter__(self):
        if self.epoch == 0:
            images = self.proc_images["norm"] = self.normalize(self.images)
            # Pre-flip images in order to do every-other epoch flipping scheme
            if self.aug.get("flip", False):
                images = self.proc_images["flip"] = batch_flip_lr(images)
            # Pre-pad images to save time when doing random translation
            pad = self.aug.get("translate", 0)
            if pad > 0:
                self.proc_images["pad"] = F.pad(images, (pad,) * 4, "reflect")

        if self.aug.get("translate", 0) > 0:
            images = batch_crop(self.proc_images["pad"], self.images.shape[-2])
        elif self.aug.get("flip", False):
            images = self.proc_images["flip"]
        else:
            images = self.proc_images["norm"]
        # Flip all images together every other epoch. This increases diversity relative to random flipping
        if self.aug.get("flip", False):
            if self.epoch % 2 == 1:
                images = images.flip(-1)

        self.epoch += 1

        indices = (torch.randperm if self.shuffle else torch.arange)(len(images), device=images.device)

        for i in range(len(self)):
            idxs = indices[i * self.batch_size : (i + 1) * self.batch_size]
            yield (images[idxs], self.labels[idxs])


#############################################
#            Network Components             #
#############################################


class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class Mul(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale


class BatchNorm(nn.BatchNorm2d):
    def __init__(self, num_features, momentum, eps=1e-12, weight=False, bias=True):
        super().__init__(num_features, eps=eps, momentum=1 - momentum)
        self.weight.requires_grad = weight
        self.bias.requires_grad = bias
        # Note that PyTorch already initializes the weights to one and bias to zero


class Conv(nn.Conv2d):
    def __init__(self, in_channels, out_channels, kernel_size=3, padding="same", bias=False):
        super().__init__(in_channels, out_channels, kernel_size=kernel_size, padding=padding, bias=bias)

    def reset_parameters(self):
        super().reset_parameters()
        if self.bias is not None:
            self.bias.data.zero_()
        w = self.weight.data
        torch.nn.init.dirac_(w[: w.size(1)])


class ConvGroup(nn.Module):
    def __init__(self, channels_in, channels_out, batchnorm_momentum):
        super().__init__()
        self.conv1 = Conv(channels_in, channels_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(channels_out, batchnorm_momentum)
        self.conv2 = Conv(channels_out, channels_out)
        self.norm2 = BatchNorm(channels_out, batchnorm_momentum)
        self.activ = nn.GELU()

    def forward(self, x):
        x = self.conv1(x)
        x = self.pool(x)
        x = self.norm1(x)
        x = self.activ(x)
        x = self.conv2(x)
        x = self.norm2(x)
        x = self.activ(x)
        return x


#############################################
#            Network Definition             #
#############################################


def make_net():
    widths = hyp["net"]["widths"]
    batchnorm_momentum = hyp["net"]["batchnorm_momentum"]
    whiten_kernel_size = 2
    whiten_width = 2 * 3 * whiten_kernel_size**2
    net = nn.Sequential(
        Conv(3, whiten_width, whiten_kernel_size, padding=0, bias=True),
        nn.GELU(),
        ConvGroup(whiten_width, widths["block1"], batchnorm_momentum),
        ConvGroup(widths["block1"], widths["block2"], batchnorm_momentum),
        ConvGroup(widths["block2"], widths["block3"], batchnorm_momentum),
        nn.MaxPool2d(3),
        Flatten(),
        nn.Linear(widths["block3"], 10, bias=False),
        Mul(hyp["net"]["scaling_factor"]),
    )
    net[0].weight.requires_grad = False
    # CPU port: float32 weights on the CPU, not .half().cuda() (--precision bf16 autocasts the forward instead)
    net = net.to(memory_format=torch.channels_last)
    return net


#############################################
#       Whitening Conv Initialization       #
#############################################


def get_patches(x, patch_shape):
    c, (h, w) = x.shape[1], patch_shape
    return x.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c, h, w).float()


def get_whitening_parameters(patches):
    n, c, h, w = patches.shape
    patches_flat = patches.view(n, -1)
    est_patch_covariance = (patches_flat.T @ patches_flat) / n
    eigenvalues, eigenvectors = torch.linalg.eigh(est_patch_covariance, UPLO="U")
    return eigenvalues.flip(0).view(-1, 1, 1, 1), eigenvectors.T.reshape(c * h * w, c, h, w).flip(0)


def init_whitening_conv(layer, train_set, eps=5e-4):
    patches = get_patches(train_set, patch_shape=layer.weight.data.shape[2:])
    eigenvalues, eigenvectors = get_whitening_parameters(patches)
    eigenvectors_scaled = eigenvectors / torch.sqrt(eigenvalues + eps)
    layer.weight.data[:] = torch.cat((eigenvectors_scaled, -eigenvectors_scaled))


############################################
#                Lookahead                 #
############################################


class LookaheadState:
    def __init__(self, net):
        self.net_ema = {k: v.clone() for k, v in net.state_dict().items()}

    def update(self, net, decay):
        for ema_param, net_param in zip(self.net_ema.values(), net.state_dict().values()):
            if net_param.dtype in (torch.half, torch.float):
                ema_param.lerp_(net_param, 1 - decay)
                net_param.copy_(ema_param)


############################################
#                 Logging                  #
############################################


def print_columns(columns_list, is_head=False, is_final_entry=False):
    print_string = ""
    for col in columns_list:
        print_string += f"|  {col}  "
    print_string += "|"
    if is_head:
        print("-" * len(print_string))
    print(print_string, flush=True)
    if is_head or is_final_entry:
        print("-" * len(print_string))


logging_columns_list = ["run   ", "epoch", "train_loss", "train_acc", "val_acc", "tta_val_acc", "total_time_seconds"]


def print_training_details(variables, is_final_entry):
    formatted = []
    for col in logging_columns_list:
        var = variables.get(col.strip(), None)
        if type(var) in (int, str):
            res = str(var)
        elif type(var) is float:
            res = f"{var:0.4f}"
        else:
            assert var is None
            res = ""
        formatted.append(res.rjust(len(col)))
    print_columns(formatted, is_final_entry=is_final_entry)


############################################
#               Evaluation                 #
############################################


def infer(model, loader, tta_level=0):
    # Test-time augmentation strategy (for tta_level=2):
    # 1. Flip/mirror the image left-to-right (50% of the time).
    # 2. Translate the image by one pixel either up-and-left or down-and-right (50% of the time,
    #    i.e. both happen 25% of the time).
    #
    # This creates 6 views per image (left/right times the two translations and no-translation),
    # which we evaluate and then weight according to the given probabilities.

    def infer_basic(inputs, net):
        return net(inputs).clone()

    def infer_mirror(inputs, net):
        return 0.5 * net(inputs) + 0.5 * net(inputs.flip(-1))

    def infer_mirror_translate(inputs, net):
        logits = infer_mirror(inputs, net)
        pad = 1
        padded_inputs = F.pad(inputs, (pad,) * 4, "reflect")
        inputs_translate_list = [
            padded_inputs[:, :, 0:32, 0:32],
            padded_inputs[:, :, 2:34, 2:34],
        ]
        logits_translate_list = [infer_mirror(inputs_translate, net) for inputs_translate in inputs_translate_list]
        logits_translate = torch.stack(logits_translate_list).mean(0)
        return 0.5 * logits + 0.5 * logits_translate

    model.eval()
    test_images = loader.normalize(loader.images)
    infer_fn = [infer_basic, infer_mirror, infer_mirror_translate][tta_level]
    with torch.no_grad(), autocast():  # CPU port: bf16 autocast with --precision bf16
        return torch.cat([infer_fn(inputs, model) for inputs in test_images.split(2000)]).float()


def evaluate(model, loader, tta_level=0):
    logits = infer(model, loader, tta_level)
    return (logits.argmax(1) == loader.labels).float().mean().item()


############################################
#                Training                  #
############################################


PRECISION = {"dtype": None}  # CPU port: set from --precision


def autocast():
    """CPU port: the forward passes in bf16 with --precision bf16 (airbench's are fp16 on the GPU), else float32."""
    return torch.autocast("cpu", dtype=PRECISION["dtype"] or torch.float32, enabled=PRECISION["dtype"] is not None)


def main_run(run, train, test):  # CPU port: airbench's main(run), given the data
    batch_size = hyp["opt"]["batch_size"]
    epochs = hyp["opt"]["train_epochs"]
    momentum = hyp["opt"]["momentum"]
    # Assuming gradients are constant in time, for Nesterov momentum, the below ratio is how much
    # larger the default steps will be than the underlying per-example gradients. We divide the
    # learning rate by this ratio in order to ensure steps are the same scale as gradients, regardless
    # of the choice of momentum.
    kilostep_scale = 1024 * (1 + 1 / (1 - momentum))
    lr = hyp["opt"]["lr"] / kilostep_scale  # un-decoupled learning rate for PyTorch SGD
    wd = hyp["opt"]["weight_decay"] * batch_size / kilostep_scale
    lr_biases = lr * hyp["opt"]["bias_scaler"]

    loss_fn = nn.CrossEntropyLoss(label_smoothing=hyp["opt"]["label_smoothing"], reduction="none")
    test_loader = CifarLoader(*test, train=False, batch_size=2000)
    train_loader = CifarLoader(*train, train=True, batch_size=batch_size, aug=hyp["aug"])
    total_train_steps = ceil(len(train_loader) * epochs)

    torch.manual_seed(run)  # CPU port: each run from its seed
    model = make_net()
    current_steps = 0

    norm_biases = [p for k, p in model.named_parameters() if "norm" in k and p.requires_grad]
    other_params = [p for k, p in model.named_parameters() if "norm" not in k and p.requires_grad]
    param_configs = [
        dict(params=norm_biases, lr=lr_biases, weight_decay=wd / lr_biases),
        dict(params=other_params, lr=lr, weight_decay=wd / lr),
    ]
    optimizer = torch.optim.SGD(param_configs, momentum=momentum, nesterov=True)

    def get_lr(step):
        warmup_steps = int(total_train_steps * 0.23)
        warmdown_steps = total_train_steps - warmup_steps
        if step < warmup_steps:
            frac = step / warmup_steps
            return 0.2 * (1 - frac) + 1.0 * frac
        else:
            frac = (step - warmup_steps) / warmdown_steps
            return 1.0 * (1 - frac) + 0.07 * frac

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, get_lr)

    alpha_schedule = 0.95**5 * (torch.arange(total_train_steps + 1) / total_train_steps) ** 3
    lookahead_state = LookaheadState(model)

    total_time_seconds = 0.0  # CPU port: time.perf_counter, not CUDA events

    # Initialize the whitening layer using training images
    started = time.perf_counter()
    train_images = train_loader.normalize(train_loader.images[:5000])
    init_whitening_conv(model[0], train_images)
    total_time_seconds += time.perf_counter() - started

    for epoch in range(ceil(epochs)):
        model[0].bias.requires_grad = epoch < hyp["opt"]["whiten_bias_epochs"]

        ####################
        #     Training     #
        ####################

        started = time.perf_counter()

        model.train()
        for inputs, labels in train_loader:
            with autocast():  # CPU port: bf16 autocast with --precision bf16
                outputs = model(inputs)
                loss = loss_fn(outputs, labels).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()

            current_steps += 1

            if current_steps % 5 == 0:
                lookahead_state.update(model, decay=alpha_schedule[current_steps].item())

            if current_steps >= total_train_steps:
                if lookahead_state is not None:
                    lookahead_state.update(model, decay=1.0)
                break

        total_time_seconds += time.perf_counter() - started

        ####################
        #    Evaluation    #
        ####################

        # Save the accuracy and loss from the last training batch of the epoch
        train_acc = (outputs.detach().argmax(1) == labels).float().mean().item()
        train_loss = loss.item() / batch_size
        val_acc = evaluate(model, test_loader, tta_level=0)
        print_training_details(
            dict(run=run, epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_acc=val_acc), False
        )

    ####################
    #  TTA Evaluation  #
    ####################

    started = time.perf_counter()
    tta_val_acc = evaluate(model, test_loader, tta_level=hyp["net"]["tta_level"])
    total_time_seconds += time.perf_counter() - started

    print_training_details(
        dict(run=run, epoch="eval", tta_val_acc=tta_val_acc, total_time_seconds=total_time_seconds), True
    )
    return tta_val_acc, total_time_seconds


def rows(args) -> list[Row]:
    """One airbench run per seed on the whole of CIFAR-10 (--quick: a few hundred images, 2 epochs)."""
    PRECISION["dtype"] = PRECISIONS[args.precision]
    folder = cifar_root(args.cifar) / FOLDER
    train, test = read_batches(folder, TRAIN_FILES), read_batches(folder, TEST_FILES)
    train, test = (train.images, train.labels), (test.images, test.labels)
    quick = " --quick" * args.quick
    if args.quick:
        hyp["opt"].update(batch_size=QUICK["batch_size"], train_epochs=QUICK["train_epochs"])
        train = tuple(t[: QUICK["train_size"]] for t in train)
        test = tuple(t[: QUICK["test_size"]] for t in test)
    args.seeds = args.seeds or (QUICK["seeds"] if args.quick else "0,1,2")
    seeds = [int(s) for s in args.seeds.split(",")]
    print_columns(logging_columns_list, is_head=True)
    runs = {seed: main_run(seed, train, test) for seed in seeds}
    accs, seconds = [acc for acc, _ in runs.values()], [s for _, s in runs.values()]
    what = f"airbench94 on the CPU ({args.precision}, {hyp['opt']['train_epochs']} epochs){quick}"
    spread = f"{100 * min(accs):.2f}%-{100 * max(accs):.2f}%"
    return [
        Row(
            f"{what}: test accuracy with TTA, mean (range) over seeds {args.seeds}",
            f"{100 * statistics.mean(accs):.2f}% ({spread})",
            f"{100 * A100['acc']:.2f}% (its README: A100, 1,000 runs)",
            f"{100 * (statistics.mean(accs) - A100['acc']):+.2f} points",
        ),
        Row(
            f"{what}: seconds airbench times (whitening, training, TTA test), by seed",
            ", ".join(f"{s:.0f}" for s in seconds),
            f"{A100['seconds']} (A100)",
            f"{statistics.mean(seconds) / A100['seconds']:.0f}x",
        ),
    ]


if __name__ == "__main__":
    arguments = parser(__doc__)
    arguments.add_argument("--seeds", help=f"comma-separated seeds, one run each (0,1,2; --quick: {QUICK['seeds']})")
    arguments.add_argument(
        "--precision", choices=sorted(PRECISIONS), default="32", help="float32, or the forward under bf16 autocast"
    )
    main("airbench94_cpu", rows, arguments.parse_args())
