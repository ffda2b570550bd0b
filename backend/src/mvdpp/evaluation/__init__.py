"""`mvdpp eval`: score a checkpoint on a fixed evaluation set (see docs/evaluation.md).

Small modules, one job each (none imports torch at import time except ``generation``)::

    evalset_reader  the evaluation folders -> EvalObject (views, cameras, inputs, mesh path)
    generation      the pipeline on an object's input views -> 32 RGBA views
    baselines       meshes from any views + cameras (generated, ground truth, inputs only)
    scoring         PSNR / SSIM / LPIPS of views, Chamfer / F-score / volume IoU of meshes
    contact_sheet   inputs / generated / ground truth of a few objects in one PNG
    report          per-object records -> means, JSON report, markdown table
    runner          evaluate(): the whole run, in a fixed order with fixed seeds
"""
