#!/usr/bin/env bash
# The lent-GPU run of the default model (MODEL_CARD.md): ECT denoiser pre-training, then consistency tuning,
# in a fixed wall-clock budget (scripts/train_gpu.py), packed into <=15 MB parts for the way back.
# Run from the repository root with data/ from scripts/prepare_twemoji.py:
#   OUT=/tmp/gpu_out bash scripts/gpu_train.sh
# The defaults are the first run from scratch. The embedded model's later runs continued the committed
# denoiser, checkpoints/twemoji32_teacher (docs/training.md). The last one's command (all three phases in 570 s
# on an H200; it started from step 7,725), now from the committed step 11,219:
#   PRETRAIN_FROM=checkpoints/twemoji32_teacher PRETRAIN_FROM_STEP=11219 PRETRAIN_MINUTES=3.6 TUNE_MINUTES=2.0 \
#     MAX_STAGE=6 KEEP_STAGES=6 TRAJ_MINUTES=1.0 TRAJECTORIES=16384 TRAJ_ANCHOR_BELOW=10 bash scripts/gpu_train.sh
# Each phase's results are packed into OUT as soon as it ends (pretrain.tgz.partNN, tune.tgz.partNN,
# traj.tgz.partNN; unpack with `cat pretrain.tgz.part* | tar xz`), so a command stopped at its time limit
# still returns the phases that finished.
set -u
RUN=${RUN:-/tmp/gpu_run}
OUT=${OUT:-/tmp/gpu_out}
PRETRAIN_MINUTES=${PRETRAIN_MINUTES:-3.2}
TUNE_MINUTES=${TUNE_MINUTES:-4.0}
# a stage-0 export to continue pretraining from (a new optimizer), and the steps it had done
PRETRAIN_FROM=${PRETRAIN_FROM:-}
PRETRAIN_FROM_STEP=${PRETRAIN_FROM_STEP:-0}
MAX_STAGE=${MAX_STAGE:-8}
KEEP_STAGES=${KEEP_STAGES:-6,8}  # the EMA after these stages is packed; at most two fit the 64 MiB way back
DEVICE=${DEVICE:-cuda}
# every tuning stage's samples are scored with this feature network (KID in the log; needs torchmetrics,
# carried as a wheel like diffusers); empty: no probe
PROBE_FEATURES=${PROBE_FEATURES-checkpoints/twemoji32_features}
DISTIL=${DISTIL:-0}  # 1: the tuning stages distil the stage-0 denoiser (train_gpu.py --distil)
# > 0: then regress on the stage-0 denoiser's ODE trajectories from the EMA after stage TRAJ_FROM (train_gpu.py
# --phase traj; packed as ema_traj: keep one stage in KEEP_STAGES then, so the parts fit the way back)
TRAJ_MINUTES=${TRAJ_MINUTES:-0}
TRAJ_FROM=${TRAJ_FROM:-6}
TRAJECTORIES=${TRAJECTORIES:-65536}
TRAJ_ANCHOR_BELOW=${TRAJ_ANCHOR_BELOW:-0}  # > 0: levels below this sigma are held near the tuned model's outputs (edits)
# more scripts/train_gpu.py options for both phases, e.g. "--preset tiny --batch-size 16" for a CPU dry run
EXTRA=${EXTRA:-}
mkdir -p "$OUT"
pack() {  # pack NAME PATTERN... (globs relative to RUN, unmatched ones skipped) into OUT/NAME.tgz.partNN
  local name=$1; shift
  (cd "$RUN" && tar czf "/tmp/$name.tgz" $(ls -d $@ 2>/dev/null)) &&
    split -b 15000000 -d "/tmp/$name.tgz" "$OUT/$name.tgz.part"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, diffusers; print(torch.__version__, diffusers.__version__, torch.cuda.is_available())"
python3 -c "import torchmetrics; print('torchmetrics', torchmetrics.__version__)" || echo "no torchmetrics: no probe"
python3 scripts/train_gpu.py --phase pretrain --run "$RUN" --minutes "$PRETRAIN_MINUTES" --device "$DEVICE" \
    $([ -n "$PRETRAIN_FROM" ] && echo --init-from "$PRETRAIN_FROM" --start-step "$PRETRAIN_FROM_STEP") $EXTRA &&
  pack pretrain pretrain_steps.json pretrain/export pretrain/samples &&
  python3 scripts/train_gpu.py --phase tune --run "$RUN" --minutes "$TUNE_MINUTES" --max-stage "$MAX_STAGE" \
    --keep-stages "$KEEP_STAGES" --device "$DEVICE" $([ "$DISTIL" = 1 ] && echo --distil) \
    $([ -n "$PROBE_FEATURES" ] && echo --probe-features "$PROBE_FEATURES") $EXTRA &&
  pack tune tune/samples 'ema_stage*' &&
  if [ "$TRAJ_MINUTES" != 0 ]; then
    python3 scripts/train_gpu.py --phase traj --run "$RUN" --minutes "$TRAJ_MINUTES" --from-stage "$TRAJ_FROM" \
      --trajectories "$TRAJECTORIES" --anchor-below "$TRAJ_ANCHOR_BELOW" --device "$DEVICE" $EXTRA &&
      pack traj ema_traj traj/samples
  fi
status=$?
ls -la "$OUT"
exit $status
