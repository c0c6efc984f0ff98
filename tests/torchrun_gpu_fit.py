"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node=2`` on one GPU.

Both processes train on the same GPU, so that the CUDA path of data-parallel
training (DDP on CUDA tensors, the loss's all-reduce overlapping the backward
pass, batch norm's statistics shared from the first process) runs on a machine
with one GPU. nccl takes one GPU per process, so this script starts the process
group itself, with gloo (which carries CUDA tensors too), and gives both
processes ``LOCAL_RANK=0`` before ``fit`` finds the group.

Usage: ``torchrun --nproc_per_node=2 torchrun_gpu_fit.py MNIST_NPZ OUT``; every
process writes what it ended with to ``OUT/rank<RANK>.pkl``.
"""

import os
import pickle
import sys

import numpy as np
import torch.distributed as dist

from skconvae import ConvAutoencoderTransformer

# Shared with the test, which fits the same model in one process.
SETTINGS = {"filters": (16, 8), "latent_dim": 16, "max_epochs": 3, "batch_size": 128}
N_FIT, N_CHUNK = 2000, 500


def main(data, out):
    rank = int(os.environ["RANK"])
    os.environ["LOCAL_RANK"] = "0"
    dist.init_process_group("gloo")
    images = np.load(data)["images"][: N_FIT + N_CHUNK]
    ae = ConvAutoencoderTransformer(**SETTINGS, random_state=0).fit(images[:N_FIT])
    module = ae.net_.module_
    result = {
        "device": ae.device_,
        "parameters_on": sorted({str(p.device) for p in module.parameters()}),
        "module": type(module).__name__,
        "train_loss": list(ae.net_.history[:, "train_loss"]),
        "weights": {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()},
        "codes": ae.transform(images[:100]),
    }
    ae.partial_fit(images[N_FIT:])
    result["partial_weights"] = {
        k: v.detach().cpu().numpy() for k, v in ae.net_.module_.state_dict().items()
    }
    with open(os.path.join(out, f"rank{rank}.pkl"), "wb") as file:
        pickle.dump(result, file)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
