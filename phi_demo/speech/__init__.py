"""Speech beyond one clip: voice activity, the live-transcription policy, long recordings, voice turns. No model and no gradio here."""
