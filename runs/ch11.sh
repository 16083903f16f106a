#!/usr/bin/env bash
# Chapter 11's training runs: the book's autoencoder and its ablations (nbs/11_vae_training.ipynb, the cells flagged
# `train`, run the same commands and show what they write). Each run is the `cpu` preset on 2 CPU threads
# (the stored ablations ran two at a time with OMP_NUM_THREADS=1: `OMP_NUM_THREADS=1 bash runs/ch11.sh vq &`, ...).
# Running this again resumes a run that was interrupted and re-measures a finished one (--resume).
#   bash runs/ch11.sh            # all six runs, one after the other
#   bash runs/ch11.sh kl vq      # only these
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
SD_BOOK="${SD_BOOK:-sd-book}"   # the `sd-book` command (its `train` subcommand comes from sd_book.train.add_train_parser)
declare -A RUNS=(
  [kl]="--data shapes --kind kl --preset cpu"
  [vq]="--data shapes --kind vq --preset cpu"
  [kl_no_lpips]="--data shapes --kind kl --preset cpu --no-lpips"
  [kl_no_gan]="--data shapes --kind kl --preset cpu --no-gan"
  [kl_gan_from_0]="--data shapes --kind kl --preset cpu --disc-start 0"
  [kl_no_attention]="--data shapes --kind kl --preset cpu --no-attention"
)
ORDER=(kl vq kl_no_lpips kl_no_gan kl_gan_from_0 kl_no_attention)
for name in "${@:-${ORDER[@]}}"; do
  echo "\$ $SD_BOOK train autoencoder ${RUNS[$name]} --out runs/ch11/$name"
  $SD_BOOK train autoencoder ${RUNS[$name]} --out "runs/ch11/$name" --resume --no-progress
done
# The main run is also measured on MNIST's test digits (the notebook's train cell writes runs/ch11/kl/eval_mnist.json).
