"""MBench (DESIGN.md section 8) and the classic text-to-motion metrics.

- `metrics`: the five motion-quality dimensions over joints, vectorised over motions and frames.
- `pose`: Body_Penetration (mesh self-intersection) and Pose_Quality (pose prior), IK for joints.
- `evaluator`, `judges`: the contrastive text-motion model and the calibrated local judge.
- `vlm`: the video-language-model judge (Gemini REST or an OpenAI-compatible endpoint).
- `prompts`, `runner`: prompt sets, scoring runs, reports; `classic`: R-precision, FID, ...
- `cli`: `vimogen bench score | run | train-judge`.
"""
