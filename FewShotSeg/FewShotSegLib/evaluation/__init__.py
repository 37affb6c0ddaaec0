"""FewShotSeg evaluation: the CHAOS evaluation, summaries, timing and the demo."""
