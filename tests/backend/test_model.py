"""The multi-view UNet, the shared input preparation and the pipeline, on the tiny preset."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from mvdpp.errors import JobCancelled, MVDPPError  # noqa: E402
from mvdpp.models import encode_rgba  # noqa: E402
from mvdpp.pipelines import MVDiffusionPPPipeline, build_unet_inputs, encode_condition, split_views  # noqa: E402
from mvdpp.presets import PRESETS, build_pipeline, build_unet  # noqa: E402

STEPS = 3


def rgba_image(seed: int, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    array = np.full((size, size, 4), 255, np.uint8)
    array[16:48, 16:48, :3] = rng.integers(0, 255, (32, 32, 3))  # a coloured square object
    array[..., 3] = 0
    array[16:48, 16:48, 3] = 255
    return Image.fromarray(array)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    return build_pipeline("tiny", seed=0)


def unet_inputs(pipe, num_condition, gen_ids, batch=1, seed=0, drop=None):
    """Random noisy latents for ``batch`` objects, through the shared preparation code."""
    g = torch.Generator().manual_seed(seed)
    size = pipe.resolution
    cond_images = torch.rand(batch, num_condition, 4, size, size, generator=g) * 2 - 1
    condition = encode_condition(pipe.vae, pipe.image_encoder, cond_images)
    latent = (pipe.unet.config.latent_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    noisy_cond = torch.randn(batch, num_condition, *latent, generator=g)
    noisy_gen = torch.randn(batch, len(gen_ids), *latent, generator=g)
    gen_view_ids = torch.tensor(gen_ids).expand(batch, -1)
    timesteps = torch.full((batch,), 500)
    return build_unet_inputs(pipe.unet.config, noisy_cond, noisy_gen, condition, gen_view_ids, timesteps, drop_condition=drop)


@torch.no_grad()
def run_unet(pipe, inputs):
    return pipe.unet(**inputs.as_kwargs()).sample


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("num_condition", [1, 10])
def test_unet_shapes_for_1_and_10_condition_views_and_8_of_32_subsets(pipe, num_condition):
    gen_ids = [3, 17, 0, 31, 8, 9, 22, 5]
    inputs = unet_inputs(pipe, num_condition, gen_ids, batch=2)
    c, s = pipe.unet.config.latent_channels, pipe.unet.config.sample_size
    views = num_condition + len(gen_ids)
    assert inputs.sample.shape == (2 * views, 2 * c + 1, s, s)
    assert inputs.num_views == views
    assert inputs.view_ids.tolist() == ([32 + i for i in range(num_condition)] + gen_ids) * 2
    out = run_unet(pipe, inputs)
    assert out.shape == (2 * views, c, s, s)
    cond_part, gen_part = split_views(out, 2, num_condition)
    assert cond_part.shape == (2, num_condition, c, s, s) and gen_part.shape == (2, 8, c, s, s)


def test_branch_mask_and_condition_latent_channels(pipe):
    inputs = unet_inputs(pipe, 2, [4, 5, 6])
    c = pipe.unet.config.latent_channels
    mask = inputs.sample[:, c]
    assert torch.all(mask[:2] == pipe.unet.config.condition_branch_value)
    assert torch.all(mask[2:] == pipe.unet.config.generation_branch_value)
    # Generation views' condition latent is the white "null" latent, condition views' their own.
    null = inputs.sample[2, c + 1:]
    assert torch.equal(inputs.sample[3, c + 1:], null) and not torch.equal(inputs.sample[0, c + 1:], null)


def test_unconditional_inputs_carry_nothing_of_the_condition(pipe):
    a = unet_inputs(pipe, 2, [4, 5], seed=1, drop=True)
    b = unet_inputs(pipe, 2, [4, 5], seed=2, drop=True)  # other condition images, other noise
    c = pipe.unet.config.latent_channels
    assert torch.equal(a.sample[:2], b.sample[:2])  # condition views identical (zeros + null latent)
    assert torch.equal(a.encoder_hidden_states, b.encoder_hidden_states)
    assert not torch.equal(a.sample[2:, :c], b.sample[2:, :c])  # generation noise untouched
    per_object = unet_inputs(pipe, 2, [4, 5], batch=2, seed=1, drop=torch.tensor([True, False]))
    assert torch.equal(per_object.sample[:2], a.sample[:2])  # object 0 dropped: same empty condition views
    assert per_object.sample[4:6, :c].abs().amin() > 0  # object 1 keeps its noisy condition latents
    assert not torch.equal(per_object.sample[4:6, c + 1:], a.sample[:2, c + 1:])
    tokens = per_object.encoder_hidden_states
    assert tokens[:4].abs().max() == 0 and tokens[4:].abs().max() > 0


def test_pipeline_shapes_cameras_and_output_types(pipe):
    images = [rgba_image(i) for i in range(10)]
    ids = [7, 0, 15, 31, 8, 1, 2, 30]
    out = pipe(images, num_inference_steps=2, guidance_scale=2.0, generator=torch.Generator().manual_seed(0), view_ids=ids)
    assert len(out.images) == 8 and all(im.mode == "RGBA" and im.size == (64, 64) for im in out.images)
    assert [cam.index for cam in out.cameras] == ids
    arr = pipe(images[:1], num_inference_steps=1, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert arr.shape == (32, 64, 64, 4) and arr.dtype == np.uint8
    lat = pipe(images[:1], num_inference_steps=1, view_ids=[1, 2], output_type="latent").images
    assert lat.shape == (2, 4, 8, 8)


# ----------------------------------------------------------------------------- global attention


def test_global_attention_mixes_views_and_only_through_self_attention(pipe):
    """Changing only a condition view's noisy latent changes every generation view's output, and
    does not with global attention switched off (tokens and everything else held fixed)."""
    c = pipe.unet.config.latent_channels
    for levels, should_change in ((None, True), ((), False)):
        unet = build_unet("tiny", global_attention_levels=levels).eval()
        unet.load_state_dict(pipe.unet.state_dict())
        inputs = unet_inputs(pipe, 1, list(range(6)))
        before = unet(**inputs.as_kwargs()).sample.detach()
        inputs.sample[0, :c] += 1.0
        after = unet(**inputs.as_kwargs()).sample.detach()
        changed = (after[1:] - before[1:]).flatten(1).abs().amax(dim=1) > 1e-5
        assert bool(changed.all()) if should_change else not bool(changed.any()), levels


def test_changing_one_condition_image_changes_every_generated_view(pipe):
    kwargs = dict(num_inference_steps=STEPS, guidance_scale=2.0, view_ids=list(range(0, 32, 4)), output_type="np")
    a = pipe([rgba_image(0), rgba_image(1)], generator=torch.Generator().manual_seed(0), **kwargs).images
    b = pipe([rgba_image(0), rgba_image(2)], generator=torch.Generator().manual_seed(0), **kwargs).images
    differs = np.abs(a.astype(int) - b.astype(int)).reshape(len(a), -1).max(axis=1) > 0
    assert differs.all()


def test_generation_views_are_permutation_equivariant(pipe):
    """Permuting generation views' inputs together with their ids permutes the outputs; the view
    embedding is made non-zero so that the ids matter."""
    unet = build_unet("tiny").eval()
    unet.load_state_dict(pipe.unet.state_dict())
    with torch.no_grad():
        unet.view_embedding_scale.fill_(1.0)
    ids = [0, 5, 9, 20, 31]
    inputs = unet_inputs(pipe, 2, ids)
    out = unet(**inputs.as_kwargs()).sample.detach()
    order = [0, 1] + [2 + i for i in (3, 0, 4, 2, 1)]  # condition views stay first
    permuted = unet_inputs(pipe, 2, ids)
    permuted.sample, permuted.view_ids = inputs.sample[order], inputs.view_ids[order]
    out_permuted = unet(**permuted.as_kwargs()).sample.detach()
    torch.testing.assert_close(out_permuted, out[order], atol=1e-5, rtol=1e-4)
    # Permuting the inputs but not the ids is NOT the same (the ids really are used).
    permuted.view_ids = inputs.view_ids
    assert not torch.allclose(unet(**permuted.as_kwargs()).sample, out[order], atol=1e-4)


def test_view_embedding_tells_views_apart_from_the_start_and_both_factors_train():
    """A fresh UNet already gives different rig views different outputs, and the table and the
    scale both get gradients (a zero scale times a random table could not learn: module doc)."""
    unet = build_unet("tiny")
    assert unet.view_embedding.num_embeddings == 42
    assert float(unet.view_embedding_scale.detach()) == 1.0 and not unet.view_embedding_is_dead
    pipe = build_pipeline("tiny", seed=0)
    inputs = unet_inputs(pipe, 1, [0, 1])
    same_latents = inputs.sample.clone()
    same_latents[2] = same_latents[1]  # generation views 0 and 1 get identical inputs; only their ids differ
    inputs.sample = same_latents
    out = pipe.unet(**inputs.as_kwargs()).sample
    assert (out[1] - out[2]).abs().max() > 1e-4
    out.square().mean().backward()
    table_grad = pipe.unet.view_embedding.weight.grad
    assert table_grad is not None and table_grad[[0, 1]].abs().sum(dim=1).min() > 0
    assert pipe.unet.view_embedding_scale.grad is not None and float(pipe.unet.view_embedding_scale.grad.abs()) > 0


def test_a_zero_view_embedding_adds_nothing_but_still_learns():
    """``reset_view_embedding(std=0)`` (Stable Diffusion init): the ids change nothing yet, the
    table's gradient is non-zero; a paper-style zero scale is recognised as dead."""
    pipe = build_pipeline("tiny", seed=0)
    pipe.unet.reset_view_embedding(std=0.0)
    inputs = unet_inputs(pipe, 1, [0, 1])
    inputs.sample[2] = inputs.sample[1]
    out = pipe.unet(**inputs.as_kwargs()).sample
    torch.testing.assert_close(out[1], out[2])
    out.square().mean().backward()
    assert pipe.unet.view_embedding.weight.grad[[0, 1]].abs().sum() > 0
    with torch.no_grad():
        pipe.unet.view_embedding_scale.zero_()
    assert pipe.unet.view_embedding_is_dead


# ----------------------------------------------------------------------------- pipeline behaviour


def test_same_seed_same_images_other_seed_other_images(pipe):
    kwargs = dict(num_inference_steps=STEPS, guidance_scale=2.0, view_ids=[0, 9, 18], output_type="np")
    a = pipe([rgba_image(0)], generator=torch.Generator().manual_seed(7), **kwargs).images
    b = pipe([rgba_image(0)], generator=torch.Generator().manual_seed(7), **kwargs).images
    c = pipe([rgba_image(0)], generator=torch.Generator().manual_seed(8), **kwargs).images
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_seeded_build_gives_identical_weights():
    a, b = build_pipeline("tiny", seed=3), build_pipeline("tiny", seed=3)
    for (name, pa), pb in zip(a.unet.state_dict().items(), b.unet.state_dict().values()):
        assert torch.equal(pa, pb), name
    c = build_pipeline("tiny", seed=4)
    assert not torch.equal(a.unet.body.conv_in.weight, c.unet.body.conv_in.weight)


def test_save_load_round_trip_gives_identical_outputs(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    assert list(tmp_path.glob("unet/*.safetensors")) and list(tmp_path.glob("vae/*.safetensors"))
    loaded = MVDiffusionPPPipeline.from_pretrained(tmp_path)
    assert type(loaded.image_encoder) is type(pipe.image_encoder) and loaded.scheduler_name == pipe.scheduler_name
    kwargs = dict(num_inference_steps=STEPS, guidance_scale=2.5, view_ids=[1, 2, 3], output_type="np")
    a = pipe([rgba_image(0)], generator=torch.Generator().manual_seed(0), **kwargs).images
    b = loaded([rgba_image(0)], generator=torch.Generator().manual_seed(0), **kwargs).images
    assert np.array_equal(a, b)


def unet_batch_sizes(pipe, monkeypatch) -> list:
    """The list that records the batch size (views) of every UNet call from now on."""
    calls = []
    original = pipe.unet.forward

    def counting_forward(*args, **kwargs):
        calls.append(kwargs["sample"].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(pipe.unet, "forward", counting_forward)
    return calls


def test_guidance_on_and_off(pipe, monkeypatch):
    calls = unet_batch_sizes(pipe, monkeypatch)
    kwargs = dict(num_inference_steps=2, view_ids=[0, 1, 2], output_type="latent")
    off = pipe([rgba_image(0)], guidance_scale=1.0, generator=torch.Generator().manual_seed(0), **kwargs).images
    assert calls == [4, 4]  # one pass of 1 condition + 3 generation views per step
    calls.clear()
    on = pipe([rgba_image(0)], guidance_scale=4.0, generator=torch.Generator().manual_seed(0), **kwargs).images
    assert calls == [8, 8]  # conditional and unconditional passes batched together
    calls.clear()
    on_sequential = pipe([rgba_image(0)], guidance_scale=4.0, generator=torch.Generator().manual_seed(0),
                         batch_guidance=False, **kwargs).images
    assert calls == [4, 4, 4, 4]
    assert not torch.allclose(on, off, atol=1e-4)
    torch.testing.assert_close(on_sequential, on, atol=1e-4, rtol=1e-4)


def test_guidance_interval_guides_only_the_steps_inside_it(pipe, monkeypatch):
    calls = unet_batch_sizes(pipe, monkeypatch)
    kwargs = dict(num_inference_steps=4, view_ids=[0, 1, 2], output_type="latent", guidance_scale=4.0)

    def sample(**extra):
        calls.clear()
        return pipe([rgba_image(0)], generator=torch.Generator().manual_seed(0), **kwargs, **extra).images

    every_step = sample()
    assert calls == [8, 8, 8, 8]
    torch.testing.assert_close(sample(guidance_interval=(0.0, 1.0)), every_step)
    pipe.scheduler.set_timesteps(4)
    fractions = [float(t) / pipe.scheduler.config.num_train_timesteps for t in pipe.scheduler.timesteps]
    assert fractions[0] > 0.5 > fractions[-1]  # the interval below splits this schedule
    early_only = sample(guidance_interval=(0.5, 1.0))
    # Guided steps batch both passes (2 x (1 condition + 3 views)); the rest run one pass.
    assert calls == [8 if f >= 0.5 else 4 for f in fractions]
    assert not torch.allclose(early_only, every_step, atol=1e-4)
    sample(guidance_interval=(0.0, 0.001))  # no timestep of this schedule inside: no guided step
    assert calls == [4, 4, 4, 4]
    for bad in [(0.6, 0.4), (-0.1, 1.0), (0.0, 1.5), (0.5,), "early"]:
        with pytest.raises(MVDPPError, match="guidance_interval"):
            sample(guidance_interval=bad)


def test_guidance_rescale_matches_each_views_spread_to_the_conditional_prediction():
    from mvdpp.pipelines.pipeline_mvdpp import rescale_guided_prediction

    g = torch.Generator().manual_seed(0)
    conditional = torch.randn(1, 3, 4, 8, 8, generator=g)
    conditional[:, 1] *= 3.0  # views of different spread: each is matched on its own
    guided = 5.0 * conditional + torch.randn(1, 3, 4, 8, 8, generator=g)
    assert torch.equal(rescale_guided_prediction(guided, conditional, 0.0), guided)
    full = rescale_guided_prediction(guided, conditional, 1.0)
    torch.testing.assert_close(full.std(dim=(-3, -2, -1)), conditional.std(dim=(-3, -2, -1)))
    # Full rescale keeps the guided prediction's direction: only each view's scale changes.
    ratio = full / guided
    assert torch.allclose(ratio, ratio[:, :, :1, :1, :1].expand_as(ratio), atol=1e-5)
    half = rescale_guided_prediction(guided, conditional, 0.5)
    torch.testing.assert_close(half, 0.5 * full + 0.5 * guided)


def test_pipeline_guidance_rescale_changes_guided_samples_only(pipe):
    kwargs = dict(num_inference_steps=2, view_ids=[0, 1], output_type="latent")

    def sample(**extra):
        return pipe([rgba_image(0)], generator=torch.Generator().manual_seed(0), **kwargs, **extra).images

    plain = sample(guidance_scale=4.0, guidance_rescale=0.0)
    rescaled = sample(guidance_scale=4.0, guidance_rescale=0.7)
    assert not torch.allclose(plain, rescaled, atol=1e-4)
    # Without guidance there is nothing to rescale.
    torch.testing.assert_close(sample(guidance_scale=1.0, guidance_rescale=0.7), sample(guidance_scale=1.0, guidance_rescale=0.0))
    with pytest.raises(MVDPPError, match="guidance_rescale"):
        sample(guidance_scale=4.0, guidance_rescale=1.5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++", "euler"])
def test_samplers_follow_the_prediction_type(pipe, monkeypatch, prediction_type, sampler):
    """With a perfect denoiser for a known clean latent, every sampler lands on that latent when
    the model predicts what the scheduler config says (epsilon or v), and misses when not."""
    pipe = build_pipeline("tiny", seed=0, prediction_type=prediction_type, scheduler=sampler)
    assert pipe.scheduler.config.prediction_type == prediction_type
    alphas = pipe.scheduler.alphas_cumprod
    target = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)).clamp(-2, 2)
    c = pipe.unet.config.latent_channels

    def oracle(kind):
        def forward(sample, timestep, encoder_hidden_states, view_ids, num_views, return_dict=True):
            a = alphas[timestep.round().long()].view(-1, 1, 1, 1)
            x_t = sample[:, :c]  # the scaled model input is the variance-preserving x_t for every sampler
            eps = (x_t - a.sqrt() * target) / (1 - a).sqrt()
            out = eps if kind == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * target
            return type("Out", (), {"sample": out})()
        return forward

    kwargs = dict(num_inference_steps=10, guidance_scale=1.0, view_ids=[0, 1], output_type="latent")
    monkeypatch.setattr(pipe.unet, "forward", oracle(prediction_type))
    right = pipe([rgba_image(0)], generator=torch.Generator().manual_seed(0), **kwargs).images
    other = "v_prediction" if prediction_type == "epsilon" else "epsilon"
    monkeypatch.setattr(pipe.unet, "forward", oracle(other))
    wrong = pipe([rgba_image(0)], generator=torch.Generator().manual_seed(0), **kwargs).images
    assert (right - target).abs().max() < 1e-3
    assert (wrong - target).abs().mean() > 0.03


def test_use_scheduler_keeps_schedule_and_prediction_type():
    pipe = build_pipeline("tiny", seed=0, prediction_type="v_prediction")
    for name in ("ddpm", "ddim", "euler", "dpm++"):
        pipe.use_scheduler(name)
        assert pipe.scheduler_name == name and pipe.scheduler.config.prediction_type == "v_prediction"
        assert pipe.scheduler.config.beta_schedule == "scaled_linear"


def test_callback_sees_every_step_and_can_cancel(pipe):
    seen = []

    def callback(p, step, timestep, kwargs):
        seen.append((step, tuple(kwargs["latents"].shape)))
        return {}

    pipe([rgba_image(0)], num_inference_steps=STEPS, view_ids=[0], callback_on_step_end=callback, output_type="latent")
    assert seen == [(i, (1, 1, 4, 8, 8)) for i in range(STEPS)]
    assert pipe.num_timesteps == STEPS

    def cancel(p, step, timestep, kwargs):
        raise JobCancelled()

    with pytest.raises(JobCancelled):
        pipe([rgba_image(0)], num_inference_steps=STEPS, view_ids=[0], callback_on_step_end=cancel)


@pytest.mark.parametrize("bad", [
    dict(images=[]),
    dict(images=[rgba_image(i) for i in range(11)]),
    dict(images=[Image.new("L", (64, 64))]),
    dict(images=["not an image"]),
    dict(view_ids=[32]),
    dict(view_ids=[1, 1]),
    dict(view_ids=[]),
    dict(scheduler="lms"),
    dict(output_type="jpeg"),
    dict(num_inference_steps=0),
])
def test_bad_input_raises_a_clear_error(pipe, bad):
    kwargs = dict(images=[rgba_image(0)], num_inference_steps=1)
    kwargs.update(bad)
    images = kwargs.pop("images")
    with pytest.raises(MVDPPError) as info:
        pipe(images, **kwargs)
    assert info.value.hint


def test_rgb_inputs_of_other_sizes_are_accepted(pipe):
    rgb = rgba_image(0, size=100).convert("RGB")
    out = pipe([rgb], num_inference_steps=1, view_ids=[0], output_type="np")
    assert out.images.shape == (1, 64, 64, 4)


def test_presets_keep_attention_heads_at_least_32_wide():
    for name, preset in PRESETS.items():
        unet = preset["unet"]
        for width, heads in zip(unet["block_out_channels"], unet["attention_head_dim"]):
            assert width % heads == 0 and width // heads >= 32, (name, width, heads)


def test_encode_rgba_keeps_leading_dimensions(pipe):
    images = torch.rand(2, 3, 4, 64, 64) * 2 - 1
    latents = encode_rgba(pipe.vae, images)
    assert latents.shape == (2, 3, 4, 8, 8)


def test_non_square_inputs_are_padded_not_stretched(pipe):
    wide = Image.new("RGBA", (128, 64), (255, 255, 255, 0))
    wide.paste((0, 0, 0, 255), (48, 16, 80, 48))  # a 32x32 black square in the middle
    tensor = pipe.images_to_tensor([wide])[0]
    alpha = tensor[3] > 0
    rows, cols = alpha.any(dim=1).nonzero(), alpha.any(dim=0).nonzero()
    height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    assert abs(height - width) <= 1 and 14 <= width <= 18  # still square, half its size (128 -> 64)
    assert torch.all(tensor[:3][:, tensor[3] == -1.0] == 1.0)  # fully transparent pixels are white


def test_decoded_background_is_white(pipe):
    out = pipe([rgba_image(0)], num_inference_steps=1, view_ids=[0, 1], output_type="np").images
    background = out[..., 3] == 0
    assert np.all(out[..., :3][background] == 255)


def test_gradient_checkpointing_gives_the_same_gradients(pipe):
    unet = build_unet("tiny")
    unet.load_state_dict(pipe.unet.state_dict())
    with torch.no_grad():
        unet.view_embedding_scale.fill_(0.5)
    inputs = unet_inputs(pipe, 1, [0, 1, 2])

    def grads():
        unet.zero_grad(set_to_none=True)
        unet(**{**inputs.as_kwargs(), "encoder_hidden_states": inputs.encoder_hidden_states.detach()}).sample.square().mean().backward()
        return {n: p.grad.clone() for n, p in unet.named_parameters() if p.grad is not None}

    unet.train()
    plain = grads()
    unet.enable_gradient_checkpointing()
    assert unet.body.down_blocks[0].gradient_checkpointing
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-5, rtol=1e-4)


def test_half_precision_models_keep_a_float32_sampler():
    """bf16 models (as on GPUs) work end to end; the sampler state stays float32."""
    pipe = build_pipeline("tiny", seed=0).to(dtype=torch.bfloat16)
    seen = []
    out = pipe([rgba_image(0)], num_inference_steps=2, guidance_scale=2.0, view_ids=[0, 5], output_type="np",
               callback_on_step_end=lambda p, i, t, kw: seen.append(kw["latents"].dtype) or {})
    assert out.images.shape == (2, 64, 64, 4)
    assert seen == [torch.float32, torch.float32]


def test_global_attention_levels_pick_the_self_attention_layers_of_those_levels():
    unet = build_unet("tiny", global_attention_levels=(1,))  # tiny: level 0 = 8x8, level 1 = 4x4 (+ mid block)
    across = {name: proc.across_views for name, proc in unet.body.attn_processors.items()}
    assert across and not any(v for name, v in across.items() if ".attn2." in name)  # cross-attention never
    for name, value in across.items():
        if ".attn1." in name:
            deep = name.startswith(("down_blocks.1.", "up_blocks.0.", "mid_block."))
            assert value == deep, name
    assert all(v for n, v in build_unet("tiny").body.attn_processors.items() if ".attn1." in n)  # default: all


def test_folding_the_input_conv_keeps_the_outputs_and_frees_the_channels(pipe):
    """fold_input_reduce: a paper-style UNet (1x1 conv to 4 channels) becomes one whose first conv
    reads all 9 channels, with the same outputs away from the border."""
    from mvdpp.models.multiview_unet import fold_input_reduce

    bottleneck = build_unet("tiny", reduce_input=True).eval()
    with torch.no_grad():
        bottleneck.input_reduce.weight.normal_(0, 0.3)
        bottleneck.input_reduce.bias.normal_(0, 0.1)
    folded = fold_input_reduce(bottleneck).eval()
    assert not folded.config.reduce_input and folded.body.conv_in.in_channels == 9
    assert isinstance(folded.input_reduce, torch.nn.Identity)
    inputs = unet_inputs(pipe, 1, [0, 3])
    with torch.no_grad():
        first_bottleneck = bottleneck.body.conv_in(bottleneck.input_reduce(inputs.sample))
        first_folded = folded.body.conv_in(inputs.sample)
    torch.testing.assert_close(first_folded[..., 1:-1, 1:-1], first_bottleneck[..., 1:-1, 1:-1], atol=1e-5, rtol=1e-4)
    assert fold_input_reduce(folded) is folded


def test_importing_the_pipeline_prints_no_torchvision_warning():
    """The pipeline needs no torchvision; transformers' "install torchvision" notice, set off by
    importing diffusers' guidance rescale, must not reach a user's terminal or Blender's log."""
    import subprocess
    import sys

    code = "import mvdpp.pipelines.pipeline_mvdpp as p; assert callable(p.rescale_noise_cfg)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "torchvision" not in run.stderr + run.stdout
