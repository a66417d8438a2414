"""Interface text in English and Turkish, chosen by ?lang=, then the ayar_lang cookie, then Accept-Language."""

from __future__ import annotations

LANGUAGES = ("en", "tr")
COOKIE = "ayar_lang"

TEXT: dict[str, dict[str, str]] = {
    "runs": {"en": "Runs", "tr": "Çalıştırmalar"},
    "compare": {"en": "Compare", "tr": "Karşılaştır"},
    "new_run": {"en": "New run", "tr": "Yeni çalıştırma"},
    "playground": {"en": "Playground", "tr": "Deneme alanı"},
    "name": {"en": "Name", "tr": "Ad"},
    "task": {"en": "Task", "tr": "Görev"},
    "method": {"en": "Method", "tr": "Yöntem"},
    "base_model": {"en": "Base model", "tr": "Temel model"},
    "status": {"en": "Status", "tr": "Durum"},
    "started": {"en": "Started", "tr": "Başlangıç"},
    "updated": {"en": "Last written", "tr": "Son yazma"},
    "running": {"en": "running", "tr": "sürüyor"},
    "done": {"en": "done", "tr": "bitti"},
    "failed": {"en": "failed", "tr": "başarısız"},
    "failed_hint": {"en": "stopped before its evaluation", "tr": "değerlendirmeden önce durdu"},
    "gate_failed": {"en": "stopped by the forgetting gate", "tr": "unutma denetimine takıldı"},
    "gate_failed_note": {"en": "Training and evaluation finished, but the tuned model forgot more than "
                               "eval.forgetting allows, so `ayar run` stopped here (exit code 4) before any "
                               "export. Why:",
                         "tr": "Eğitim ve değerlendirme bitti, ama ince ayarlı model eval.forgetting'in izin "
                               "verdiğinden fazlasını unuttu; bu yüzden `ayar run` dışa aktarmadan önce burada "
                               "durdu (çıkış kodu 4). Nedeni:"},
    "gate_levers": {"en": "Levers to try", "tr": "Denenebilecek ayarlar"},
    "gate_passed": {"en": "Forgetting gate passed: the tuned model stayed within the eval.forgetting bounds.",
                    "tr": "Unutma denetimi geçildi: ince ayarlı model eval.forgetting sınırları içinde kaldı."},
    "no_runs": {"en": "No run folders under {root} yet. Start one with the New run form or `ayar run recipe.yaml`.",
                "tr": "{root} altında henüz çalıştırma klasörü yok. Yeni çalıştırma formuyla ya da "
                      "`ayar run recipe.yaml` ile başlatın."},
    "select_compare": {"en": "Tick two or more runs to compare them.",
                       "tr": "Karşılaştırmak için iki ya da daha fazla çalıştırma seçin."},
    "metrics": {"en": "Metrics", "tr": "Ölçümler"},
    "metric": {"en": "metric", "tr": "ölçüm"},
    "delta": {"en": "delta", "tr": "fark"},
    "ci": {"en": "95% CI (paired bootstrap)", "tr": "%95 GA (eşli bootstrap)"},
    "no_eval": {"en": "Not evaluated yet.", "tr": "Henüz değerlendirilmedi."},
    "loss_curve": {"en": "Loss", "tr": "Kayıp"},
    "live": {"en": "updates live while the run trains", "tr": "çalıştırma eğitilirken canlı güncellenir"},
    "no_curve": {"en": "No loss logged yet.", "tr": "Henüz kayıp yazılmadı."},
    "data_card": {"en": "Data card", "tr": "Veri kartı"},
    "records_in": {"en": "records in", "tr": "gelen kayıt"},
    "kept": {"en": "kept", "tr": "tutulan"},
    "removed": {"en": "removed", "tr": "çıkarılan"},
    "rejected": {"en": "rejected", "tr": "reddedilen"},
    "reason": {"en": "reason", "tr": "neden"},
    "count": {"en": "count", "tr": "sayı"},
    "examples": {"en": "examples", "tr": "örnekler"},
    "loss_mask": {"en": "Loss mask", "tr": "Kayıp maskesi"},
    "forgetting": {"en": "Forgetting", "tr": "Unutma"},
    "risks": {"en": "Risks", "tr": "Riskler"},
    "carbon": {"en": "Carbon", "tr": "Karbon"},
    "samples": {"en": "Samples", "tr": "Örnek çıktılar"},
    "worst": {"en": "Worst errors", "tr": "En kötü hatalar"},
    "prompt": {"en": "prompt", "tr": "istem"},
    "reference": {"en": "reference", "tr": "referans"},
    "output": {"en": "output", "tr": "çıktı"},
    "recipe": {"en": "Resolved recipe", "tr": "Çözümlenmiş tarif"},
    "artifacts": {"en": "Artifacts", "tr": "Çıktı dosyaları"},
    "commands": {"en": "commands", "tr": "komutlar"},
    "training": {"en": "Training", "tr": "Eğitim"},
    "report": {"en": "Static report", "tr": "Statik rapor"},
    "shared_examples": {"en": "Outputs on the shared test examples", "tr": "Ortak test örneklerinde çıktılar"},
    "no_shared": {"en": "These runs share no test examples.", "tr": "Bu çalıştırmaların ortak test örneği yok."},
    "base": {"en": "base", "tr": "temel"},
    "tuned": {"en": "tuned", "tr": "ince ayarlı"},
    "send": {"en": "Send", "tr": "Gönder"},
    "clear": {"en": "Clear", "tr": "Temizle"},
    "message": {"en": "Your message", "tr": "Mesajınız"},
    "loading_model": {"en": "Loading the models…", "tr": "Modeller yükleniyor…"},
    "ready": {"en": "Ready.", "tr": "Hazır."},
    "play_note": {"en": "Both models answer with the chat template the run trained with, through the same "
                        "engine and API as `ayar serve`.",
                  "tr": "İki model de çalıştırmanın eğitimde kullandığı sohbet şablonuyla, `ayar serve` ile aynı motor "
                        "ve API üzerinden yanıt verir."},
    "max_tokens": {"en": "max tokens", "tr": "en çok token"},
    "temperature": {"en": "temperature", "tr": "sıcaklık"},
    "example_recipe": {"en": "Start from", "tr": "Başlangıç tarifi"},
    "validate": {"en": "Check", "tr": "Denetle"},
    "start": {"en": "Start run", "tr": "Çalıştırmayı başlat"},
    "yaml_note": {"en": "The recipe this form writes, and the same run from the command line:",
                  "tr": "Bu formun yazdığı tarif ve aynı çalıştırmanın komut satırındaki karşılığı:"},
    "default": {"en": "default", "tr": "varsayılan"},
    "main_settings": {"en": "Main settings", "tr": "Temel ayarlar"},
    "more_settings": {"en": "Every other setting (folded; a section whose switch is off is hidden)",
                      "tr": "Diğer tüm ayarlar (katlı; anahtarı kapalı bölümler gizli)"},
    "progress": {"en": "Progress", "tr": "İlerleme"},
    "open_run": {"en": "Open the run page", "tr": "Çalıştırma sayfasını aç"},
    "valid": {"en": "The recipe is valid.", "tr": "Tarif geçerli."},
    "output_dir_note": {"en": "run.output_dir is set to the runs folder so that the run appears here.",
                        "tr": "Çalıştırma burada görünsün diye run.output_dir çalıştırmalar klasörüne ayarlanır."},
    "not_found": {"en": "No run named {name}.", "tr": "{name} adında çalıştırma yok."},
    "login": {"en": "API key", "tr": "API anahtarı"},
    "login_note": {"en": "This UI is bound beyond this machine and needs the key given with --api-key.",
                   "tr": "Bu arayüz bu makinenin dışına açık; --api-key ile verilen anahtarı ister."},
    "other_sections": {"en": "Other figures", "tr": "Diğer rakamlar"},
    "sweeps": {"en": "Sweeps", "tr": "Taramalar"},
    "sweep": {"en": "Sweep", "tr": "Tarama"},
    "no_sweeps": {"en": "No sweep folders under {root} yet. Start one with `ayar sweep recipe.yaml` "
                        "(see docs/sweep.md).",
                  "tr": "{root} altında henüz tarama klasörü yok. `ayar sweep recipe.yaml` ile başlatın "
                        "(bkz. docs/sweep.md)."},
    "objectives": {"en": "Objectives", "tr": "Hedefler"},
    "trials": {"en": "Trials", "tr": "Denemeler"},
    "trial": {"en": "trial", "tr": "deneme"},
    "no_trials": {"en": "No trial yet.", "tr": "Henüz deneme yok."},
    "best_trial": {"en": "Best", "tr": "En iyi"},
    "best_mark": {"en": "★ best", "tr": "★ en iyi"},
    "pareto_mark": {"en": "★ Pareto front", "tr": "★ Pareto cephesi"},
    "pareto_front": {"en": "Pareto front (first two objectives)", "tr": "Pareto cephesi (ilk iki hedef)"},
    "sweep_live": {"en": "read live from the study", "tr": "çalışmadan canlı okundu"},
    "sweep_from_table": {"en": "from the trials table of the last report (the study's storage is not readable "
                                "from here)",
                         "tr": "son raporun deneme tablosundan (çalışmanın deposu buradan okunamıyor)"},
    "language": {"en": "Türkçe", "tr": "English"},
}


def pick_language(query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """The interface language: an explicit choice, else the browser's first supported language, else English."""
    for choice in (query, cookie):
        if choice in LANGUAGES:
            return choice
    weighted = []
    for index, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        weighted.append((-quality, index, tag.strip().lower().split("-")[0]))
    for _, _, lang in sorted(weighted):
        if lang in LANGUAGES:
            return lang
    return "en"


def t(lang: str, key: str, **values: str) -> str:
    """The text ``key`` in ``lang`` (English when missing), with {placeholders} filled."""
    entry = TEXT[key]
    text = entry.get(lang) or entry["en"]
    return text.format(**values) if values else text
