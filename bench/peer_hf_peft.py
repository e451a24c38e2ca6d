# Peer baseline: HF transformers + PEFT LoRA training step on a gpt-oss-20b-shaped model
# (random bf16 weights), one GPU. Prints one JSON line per configuration.
# The team's peer script (shared/peers/hf_peft_train.py) kept in the tree so the device can run it beside
# `gptoss bench`; SHAPES=1x2048,4x1024 picks the batch x seq shapes (default: the three of PEERS.md).
import os, sys, time, json, math
import torch
import transformers, peft
from transformers import GptOssConfig, GptOssForCausalLM
from peft import LoraConfig, get_peft_model

def log(*a):
    print(*a, flush=True)

log("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)
log("gpu", torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory / 2**30, "GiB")
cfg = GptOssConfig(num_hidden_layers=24, num_local_experts=32)
log("rope:", getattr(cfg, "rope_parameters", None), getattr(cfg, "rope_scaling", None))
log("default GptOssConfig:", json.dumps({k: v for k, v in cfg.to_dict().items() if not isinstance(v, (dict, list)) or k in ("rope_scaling", "layer_types")})[:3000])
layers = int(os.environ.get("LAYERS", 24))
cfg.num_hidden_layers = layers
cfg.layer_types = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]
impl = os.environ.get("ATTN", "eager")
cfg._attn_implementation = impl
torch.manual_seed(0)
torch.set_default_dtype(torch.bfloat16)
t0 = time.time()
with torch.device("cuda"):
    model = GptOssForCausalLM(cfg)
torch.set_default_dtype(torch.float32)
model.to(torch.bfloat16)
torch.cuda.synchronize()
nparams = sum(p.numel() for p in model.parameters())
log(f"built model layers={layers} params={nparams/1e9:.2f}B in {time.time()-t0:.1f}s mem={torch.cuda.memory_allocated()/2**30:.1f}GiB")
model.config.use_cache = False
model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
model.enable_input_require_grads()

targets = os.environ.get("TARGETS", "attn")
kw = dict(r=int(os.environ.get("R", 8)), lora_alpha=2 * int(os.environ.get("R", 8)), lora_dropout=0.0,
          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
if targets == "all":
    kw["target_parameters"] = [f"{i}.mlp.experts.gate_up_proj" for i in range(layers)] + [f"{i}.mlp.experts.down_proj" for i in range(layers)]
pm = get_peft_model(model, LoraConfig(**kw))
ntrain = sum(p.numel() for p in pm.parameters() if p.requires_grad)
log(f"targets={targets} trainable={ntrain/1e6:.2f}M")
opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=2e-4, fused=True)
pm.train()
shapes = os.environ.get("SHAPES", "1x2048,4x1024,8x2048")
for (B, T) in [tuple(int(v) for v in x.split("x")) for x in shapes.split(",")]:
    try:
        torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
        ids = torch.randint(0, cfg.vocab_size, (B, T), device="cuda")
        times = []
        for it in range(4):
            torch.cuda.synchronize(); t = time.time()
            out = pm(input_ids=ids, labels=ids)
            out.loss.backward()
            opt.step(); opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize(); times.append(time.time() - t)
        step = sorted(times[1:])[len(times[1:]) // 2]
        r = dict(peer="hf+peft", attn=impl, targets=targets, layers=layers, B=B, T=T, step_s=round(step, 3),
                 tok_s=round(B * T / step, 1), peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                 loss=round(out.loss.item(), 3), times=[round(x, 3) for x in times])
        log("RESULT", json.dumps(r))
    except torch.OutOfMemoryError as e:
        log("RESULT", json.dumps(dict(peer="hf+peft", B=B, T=T, error="OOM")))
        torch.cuda.empty_cache()
    except Exception as e:
        log("RESULT", json.dumps(dict(peer="hf+peft", B=B, T=T, error=repr(e)[:300])))
        break
