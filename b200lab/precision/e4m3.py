"""The e4m3 format's constants every FP8 path here scales by."""

E4M3_MAX = 448.0  # the largest finite float8_e4m3fn
AMAX_FLOOR = 1e-12  # an all-zero row gets this amax, not a division by zero
