"""Online RL for the GRPO family, as functions the grpo objective (objectives/grpo.py) composes:

    rollout.py     G completions per prompt on the inference engine, prompt prefix shared
    rewards.py     reward functions (built-ins, FILE.py:FUNCTION, rm:PATH) and their weighted sum
    advantages.py  registered estimators: grpo (scale group|batch|none), rloo, reinforce_pp(_baseline)
    losses.py      the clipped policy loss with k3 KL, importance levels and registered aggregations
    presets.py     --grpo.algo grpo|dapo|dr_grpo|gspo|rloo|reinforce_pp as knob presets
    batch.py       completions -> tensors; completion log-probs
    step.py        the generation phase of an optimizer step (sample, score, refill, advantage)
"""
