"""What users upload, opened and checked: kinds by content, images, 16 kHz audio, videos, PDFs, URLs. No model here."""
