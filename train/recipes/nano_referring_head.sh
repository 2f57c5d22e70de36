#!/usr/bin/env bash
# The referring head of the bundled nano model (glee_core/modeling/referring_head.py), trained on the frozen
# stage-15 weights: GLEE's own weights do not change. Samples: 7,500 shapeworld train scenes under four data
# seeds (each scene: up to 4 of its referring expressions and 4 negative expressions; 56,340 expressions), the
# held-out figures on 300 val scenes (seed 5, 2,235 expressions). Then 2,000 more steps from that head at lr 5e-4
# (sample seed 1). Run from the repository root; about 40 min of collection and 80 min of training on 2 CPU threads.
set -euo pipefail
out=${1:-runs/nano-referring-head}
mkdir -p runs/referring-samples
for part in "2000 17" "1500 18" "2000 19" "2000 20"; do
  set -- $part
  python -c "
import sys
from glee_core.modeling.glee import GleeModel
from train.glee.referring_head import collect_samples
model = GleeModel.from_pretrained('nano').float().eval()
collect_samples(model, $1, split='train', seed=$2).save('runs/referring-samples/train_$2.pt')"
done
gleekit train referring-head --model nano --out "$out" --half \
  --samples runs/referring-samples/train_17.pt --samples runs/referring-samples/train_18.pt \
  --samples runs/referring-samples/train_19.pt --samples runs/referring-samples/train_20.pt \
  --val-scenes 300 --val-seed 5 --steps 2500 --dropout 0.1
python -c "
import torch
from glee_core.modeling.glee import GleeModel
from train.glee.referring_head import ReferringSamples, train_head
model = GleeModel.from_pretrained('$out').float()
samples = ReferringSamples.concatenate([ReferringSamples.load(f'runs/referring-samples/train_{s}.pt') for s in (17, 18, 19, 20)])
torch.manual_seed(1)
train_head(model.referring_head, samples, steps=2000, lr=5e-4, seed=1)
model.save_pretrained('$out', dtype=torch.float16)"
