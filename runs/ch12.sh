#!/usr/bin/env bash
# Chapter 12's training runs: the class-conditional latent diffusion model on MNIST and its comparisons
# (nbs/12_ldm_training.ipynb, the cells flagged `train`, run the same commands and show what they write).
# Each run is the `cpu` preset on 2 CPU threads, on chapter 11's autoencoder (runs/ch11/kl: run runs/ch11.sh kl first).
# Running this again resumes a run that was interrupted and re-measures a finished one (--resume).
#   bash runs/ch12.sh                 # all runs, one after the other
#   bash runs/ch12.sh eps flow        # only these
#   bash runs/ch12.sh arch_base arch_skip_none   # the architecture comparisons (arch_*): 1,000 steps each
#   bash runs/ch12.sh eps_min_snr uncond train_no_warmup train_no_clip   # the recipe's parts, against arch_base: 1,000 steps each
#   PRESET=gpu EXTRA="--device cuda --eval-per-class 1000 --cas" bash runs/ch12.sh eps   # on a GPU (writes runs/ch12_gpu/)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
SD_BOOK="${SD_BOOK:-sd-book}"   # the `sd-book` command (its `train ldm` subcommand comes from sd_book.ldm.add_parser)
AE="${AE:-runs/ch11/kl}"
PRESET="${PRESET:-cpu}"
OUT="runs/ch12$([ "$PRESET" = cpu ] || echo "_$PRESET")"
ARCH="--steps 1000 --eval-per-class 200"   # the architecture runs' shared budget
declare -A RUNS=(
  [eps]="--data mnist --cond class --objective eps --eval-per-class 500"
  [v]="--data mnist --cond class --objective v --eval-per-class 500"
  [flow]="--data mnist --cond class --objective flow --eval-per-class 500"
  [eps_rerun]="--data mnist --cond class --objective eps --eval-per-class 500"   # the main run's command again, on quiet cores: its time, and whether it repeats
  # "why so many stacked blocks?": one change each from the cpu preset's UNet, 1,000 steps, 200 digits per class judged
  [arch_base]="--data mnist --cond class --objective eps $ARCH --sample-every 100"   # judged every 100 steps: the learning curve
  [arch_levels_1]="--data mnist --cond class --objective eps $ARCH --channel-mult 1"
  [arch_levels_3]="--data mnist --cond class --objective eps $ARCH --channel-mult 1,2,2"
  [arch_blocks_2]="--data mnist --cond class --objective eps $ARCH --num-res-blocks 2"
  [arch_blocks_3]="--data mnist --cond class --objective eps $ARCH --num-res-blocks 3"
  [arch_channels_32]="--data mnist --cond class --objective eps $ARCH --channels 32"
  [arch_channels_32_groups_16]="--data mnist --cond class --objective eps $ARCH --channels 32 --norm-groups 16"
  [arch_channels_128]="--data mnist --cond class --objective eps $ARCH --channels 128"
  [arch_attn_low]="--data mnist --cond class --objective eps $ARCH --attention 1,mid"
  [arch_attn_all]="--data mnist --cond class --objective eps $ARCH --attention 0,1,mid"
  [arch_skip_add]="--data mnist --cond class --objective eps $ARCH --skip add"
  [arch_skip_none]="--data mnist --cond class --objective eps $ARCH --skip none"
  # what the training recipe buys: one change each from arch_base, the same 1,000-step budget
  [eps_min_snr]="--data mnist --cond class --objective eps $ARCH --min-snr 5"
  [uncond]="--data mnist --cond none --objective eps $ARCH"
  [train_no_warmup]="--data mnist --cond class --objective eps $ARCH --warmup 0"
  [train_no_clip]="--data mnist --cond class --objective eps $ARCH --grad-clip 0"
)
ORDER=(eps v flow eps_rerun arch_base arch_levels_1 arch_levels_3 arch_blocks_2 arch_blocks_3 arch_channels_32 arch_channels_32_groups_16 arch_channels_128
       arch_attn_low arch_attn_all arch_skip_add arch_skip_none eps_min_snr uncond train_no_warmup train_no_clip)
for name in "${@:-${ORDER[@]}}"; do
  echo "\$ $SD_BOOK train ldm --autoencoder $AE ${RUNS[$name]} --preset $PRESET ${EXTRA:-} --out $OUT/$name"
  $SD_BOOK train ldm --autoencoder "$AE" ${RUNS[$name]} --preset "$PRESET" ${EXTRA:-} --out "$OUT/$name" --resume --no-progress
done
# The main run judged further from its committed EMA UNet (guidance x sampler steps, and the Classification Accuracy Score):
#   python runs/ch12_eval.py runs/ch12/eps --guidance 1,3,5 --steps 10,20,50
