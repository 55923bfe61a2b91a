"""The weight-space view of a network: tokens (weights <-> a token sequence) and the
function-preserving permutations used as augmentation."""
