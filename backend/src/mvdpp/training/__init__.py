"""`mvdpp train`: the training stages of MVDiffusion++ on HuggingFace accelerate.

Modules (each with one job):

* ``stages``      the stage recipes (VAE, the three UNet stages) and training settings (torch-free)
* ``run_folder``  the layout of a run folder: checkpoints, log, samples, the training state
* ``ema``         exponential moving average of the trained weights
* ``objectives``  the losses of the VAE and the UNet stages, built on ``mvdpp.pipelines``' shared
                  input preparation so training and sampling cannot drift apart
* ``trainer``     the loop: accelerate, bf16 autocast on CUDA, checkpoints, resume, time limit
* ``export``      the final EMA pipeline as a diffusers folder (safetensors, fp16)
* ``profiling``   FLOP counting, matmul peak, a profiler breakdown by component (for the benches)
* ``benchmark_train`` / ``benchmark_sample``  ``mvdpp bench train`` / ``mvdpp bench sample``

This package's ``__init__`` imports nothing heavy: ``mvdpp bench`` imports the benchmark modules
to build its argument parser, and that must stay fast and torch-free.
"""
