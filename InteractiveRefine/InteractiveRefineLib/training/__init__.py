"""Training: dataset sampling, augmentation, box samples and sources, pseudo-objects, the P-Net/PC-Net and
box-network training loops with exact resume (checkpoint). Imports core and engine."""
