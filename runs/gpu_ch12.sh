# Chapter 12's part of runs/gpu.sh (sourced by it, after chapter 11's runs have started): latent diffusion on MNIST,
# on the autoencoder that chapter 11's `kl` run is training at the same moment, so it waits for that run first.
# The `cpu` preset (the configuration whose 45-minute CPU budget the chapter measures) with each objective and
# weighting, unconditional, the architecture comparisons of the chapter's last section, and the `gpu` preset.
AE_DIR="${AE_DIR:-runs/gpu/ch11/kl}"   # AE_DIR=runs/ch11/kl: the autoencoder the book ships (trained on a CPU)
LDM_PRESET="${LDM_PRESET:-cpu}"
EVAL="--eval-per-class ${EVAL_PER_CLASS:-1000}"
declare -A LDM=(
  [eps]="--cond class --objective eps"
  [v]="--cond class --objective v"
  [flow]="--cond class --objective flow"
  [eps_min_snr]="--cond class --objective eps --min-snr 5"
  [v_min_snr]="--cond class --objective v --min-snr 5"
  [uncond]="--cond none --objective eps"
  [arch_channels_32]="--cond class --objective eps --channels 32"
  [arch_channels_128]="--cond class --objective eps --channels 128"
  [arch_levels_1]="--cond class --objective eps --channel-mult 1"
  [arch_levels_3]="--cond class --objective eps --channel-mult 1,2,2"
  [arch_blocks_2]="--cond class --objective eps --num-res-blocks 2"
)
(
  while [ ! -f "$AE_DIR/eval.json" ] && [ "$(left)" -gt 60 ]; do sleep 5; done
  if [ -f "$AE_DIR/eval.json" ]; then
    echo "chapter 12 starts with $(left) s left"
    for name in ${LDM_RUNS:-${!LDM[@]}}; do   # LDM_RUNS="v flow": only these
      run "ch12_$name" $(( $(left) - 30 )) train ldm --autoencoder "$AE_DIR" --data mnist --preset "$LDM_PRESET" ${LDM[$name]} $EVAL \
          --out "runs/gpu/ch12/$name" --no-progress
    done
    # the `gpu` preset, for as many of its steps as fit (the chapter says how many that was)
    [ "${GPU_PRESET_STEPS:-3000}" -gt 0 ] && run ch12_gpu_preset $(( $(left) - 30 )) train ldm --autoencoder "$AE_DIR" --data mnist --preset "${LDM_GPU_PRESET:-gpu}" \
        --cond class --objective eps --steps "${GPU_PRESET_STEPS:-3000}" $EVAL --out runs/gpu/ch12/gpu_preset --no-progress
    # the main run's sweep over guidance scales and sampler steps: a second pass over the finished run (--resume
    # re-evaluates it), so that a sweep cut short by the deadline leaves the first evaluation in place (eval_main.json)
    if [ -n "${SWEEP:-1,2,3,5 10,20,50}" ]; then
      read -r SG SS <<< "${SWEEP:-1,2,3,5 10,20,50}"
      while [ ! -f runs/gpu/ch12/eps/eval.json ] && [ "$(left)" -gt 60 ]; do sleep 5; done
      [ -f runs/gpu/ch12/eps/eval.json ] && cp runs/gpu/ch12/eps/eval.json runs/gpu/ch12/eps/eval_main.json && \
        run ch12_eps_sweep $(( $(left) - 20 )) train ldm --autoencoder "$AE_DIR" --data mnist --preset "$LDM_PRESET" ${LDM[eps]} $EVAL \
            --sweep-guidance "$SG" --sweep-steps "$SS" --out runs/gpu/ch12/eps --resume --no-progress
    fi
    wait
  else echo "chapter 11's kl run did not finish in time: no chapter 12 runs"; fi
) &
KEEP_CH12_EACH="eps v flow"   # the models kept from this run (EMA weights), one archive each
