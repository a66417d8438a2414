"""Rehearsal data: general instructions whose answers the base model writes itself (``data.rehearsal``).

A fine-tune on one narrow task drifts the model's general behaviour (the quickstart's tuned model
started answering every question in a word or two). Mixing the base model's own greedy answers to
general instructions into training pulls it back: the loss on those rows is near zero where the model
has not drifted and grows where it has. This module holds the prompts and the mixing arithmetic; the
answers are generated at prepare time by ``ayar.eval.rehearsal`` (it needs the model).

The built-in prompts are general requests of many kinds, in English and Turkish (about 60/40), most
of them inviting an answer of a sentence or two, since answers the model does not finish within the
rehearsal's token budget are dropped. None of them is, or asks about the subject of, one of the
forgetting report's probe questions (``ayar.eval.forgetting``), so the report still measures material
the fine-tune never saw; a test checks it, and prompts from a user's file that match a probe are
dropped at prepare time.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from ayar.errors import UsageError
from ayar.recipe import RehearsalConfig

REHEARSAL_FILE = "rehearsal.jsonl"
REHEARSAL_TASK = "rehearsal"  # the records' ``task`` field: never a task of the held-out evaluation

BUILTIN_PROMPTS = (
    # English: definitions and explanations
    "What is a noun?",
    "What is a verb? Give an example.",
    "Explain what a rainbow is in one sentence.",
    "What is photosynthesis?",
    "What does a thermometer measure?",
    "What is the difference between weather and climate?",
    "What is a library?",
    "Why do we need sleep?",
    "What is an adjective?",
    "What does a doctor do?",
    "What is gravity?",
    "Why do leaves change color in autumn?",
    "What is a computer program?",
    "What is recycling and why is it useful?",
    "What is the purpose of a dictionary?",
    "What is a volcano?",
    "What does a pilot do?",
    "What is an email?",
    "Explain what a map is used for.",
    "What is a healthy breakfast?",
    # English: short writing and language
    "Give a synonym for the word 'happy'.",
    "Write one sentence about a rainy day.",
    "Write a short greeting for a friend's birthday.",
    "Give an antonym of the word 'early'.",
    "Write a sentence using the word 'bright'.",
    "Suggest a name for a pet cat.",
    "Write a polite way to ask for help.",
    "Give a short tip for learning a new language.",
    "Describe a cup of tea in one sentence.",
    "Write a short thank-you note to a teacher.",
    "Correct this sentence: 'She go to school every day.'",
    "Give an example of a question you could ask a new classmate.",
    "Name a fruit that is yellow.",
    "Name a musical instrument with strings.",
    "Name an animal that can fly.",
    "Name a vegetable that grows under the ground.",
    "Name a sport played with a ball.",
    "What is a good way to save water at home?",
    "How can I stay calm before an exam?",
    "What should I pack for a day at the beach?",
    "Give one reason why reading books is good.",
    "How do you make a cup of tea?",
    "What is a simple way to exercise every day?",
    "Why should we wash our hands?",
    "What is a good habit for a student?",
    "Summarize in one sentence: The train was late, so Ali walked to work and arrived on time.",
    "Is a tomato a fruit or a vegetable?",
    "What do you call a baby dog?",
    "What is the plural of 'child'?",
    "What is the past tense of 'run'?",
    # Turkish
    "İsim nedir? Kısaca açıkla.",
    "Fiil nedir? Bir örnek ver.",
    "Gökkuşağı nedir? Bir cümleyle açıkla.",
    "Fotosentez nedir?",
    "Termometre neyi ölçer?",
    "Kütüphane nedir?",
    "Neden uyumaya ihtiyacımız var?",
    "Doktor ne iş yapar?",
    "Yer çekimi nedir?",
    "Geri dönüşüm nedir ve neden faydalıdır?",
    "Yanardağ nedir?",
    "Sağlıklı bir kahvaltı nasıl olur?",
    "'Mutlu' kelimesinin eş anlamlısını yaz.",
    "Yağmurlu bir gün hakkında bir cümle yaz.",
    "Bir arkadaşın doğum günü için kısa bir tebrik mesajı yaz.",
    "'Erken' kelimesinin zıt anlamlısı nedir?",
    "Bir kedi için isim öner.",
    "Yardım istemenin kibar bir yolunu yaz.",
    "Yeni bir dil öğrenmek için kısa bir öneri ver.",
    "Bir öğretmene kısa bir teşekkür notu yaz.",
    "Sarı renkli bir meyve söyle.",
    "Telli bir müzik aleti söyle.",
    "Uçabilen bir hayvan söyle.",
    "Evde su tasarrufu yapmanın iyi bir yolu nedir?",
    "Sınavdan önce nasıl sakin kalabilirim?",
    "Kitap okumanın faydalı olmasının bir nedenini söyle.",
    "Çay nasıl demlenir?",
    "Neden ellerimizi yıkamalıyız?",
    "Bir öğrenci için iyi bir alışkanlık nedir?",
    "Domates meyve midir, sebze midir?",
    # English: science and nature
    "In a sentence, what is an echo?",
    "Why do we see lightning before we hear thunder?",
    "What do the lungs do in the human body?",
    "What is a mammal? Answer in one sentence.",
    "What is a habitat?",
    "What does a battery do? Keep it short.",
    "How is a shadow made?",
    "What is compost?",
    "How is a hill different from a mountain?",
    "Why do some animals sleep through the winter?",
    "Why do we have bones?",
    "How can a cactus live with very little water?",
    "Why do cats purr? Give a short answer.",
    "What is a tadpole?",
    "Why do trees have bark?",
    "What is a magnifying glass used for?",
    "How does exercise change our muscles?",
    "What is the main job of the brain?",
    "What is a nutrient? Give one example.",
    "What is camouflage in animals?",
    "What does a seed need to start growing?",
    "Why do birds build nests?",
    # English: health and everyday life
    "Give one tip for drinking enough water during the day.",
    "Why is it good to eat vegetables?",
    "Why is stretching useful before exercise?",
    "What should you do if you feel dizzy? Answer briefly.",
    "How can you avoid catching the flu?",
    "Why should you cover your mouth when you sneeze?",
    "What is a pharmacy?",
    "Why is good posture important when sitting at a desk?",
    "What is first aid, briefly?",
    "Why is laughing good for you?",
    "Give one tip for keeping a houseplant healthy.",
    "What should a child do if they get lost in a shopping mall?",
    "How do you wash dishes by hand? Answer briefly.",
    "What helps a person wake up on time in the morning?",
    "How do you politely decline an invitation?",
    "What should you take with you on a long car trip?",
    "Suggest a good present for a child who likes reading.",
    "Give one idea for spending a rainy afternoon at home.",
    "What is a queue, and why do people stand in one?",
    "What should you do if you find a lost wallet?",
    # English: cooking
    "Give a simple idea for a quick lunch.",
    "What does it mean to simmer food?",
    "What is a spice? Give one example.",
    "Describe how to make a simple sandwich in one sentence.",
    "What is cheese made from?",
    "How do you know when pasta is cooked?",
    "Why do bakers knead dough?",
    "How can you keep cut apples from turning brown?",
    "What is the difference between fruit juice and a smoothie?",
    "How should raw chicken be handled safely in the kitchen?",
    "How is popcorn prepared?",
    # English: school and work
    "How can I improve my handwriting?",
    "What is the purpose of a school uniform?",
    "What is a science experiment?",
    "How can a student prepare for a spelling test?",
    "Why is it useful to read a difficult text more than once?",
    "How can group work help students learn?",
    "How can you make studying more fun?",
    "Give an example of a good classroom rule.",
    "What is a debate?",
    "What kind of work does a mechanic do?",
    "Explain what a journalist does.",
    "What kinds of things does a plumber fix?",
    "What is the work of a lawyer? Answer briefly.",
    "How does a dentist help people?",
    "What is the role of a chef in a restaurant?",
    "What is a deadline?",
    "How should you answer a customer's complaint politely?",
    "Write a short email asking your manager for a meeting.",
    "What does a cashier do in a shop?",
    "What is an internship?",
    "How do police officers keep people safe?",
    # English: technology
    "Why do towns build bridges?",
    "What is a website?",
    "What is a camera used for?",
    "Why should you update the apps on your phone?",
    "What does it mean to download a file?",
    "What is a spreadsheet used for?",
    "How does a microwave oven heat food?",
    "What does a light bulb do?",
    "What is a video call?",
    "In simple words, what is Wi-Fi?",
    "How does an elevator help people in tall buildings?",
    "What is a computer virus?",
    "Why does a car need an engine?",
    # English: language and short writing
    "Describe a busy market in a single sentence.",
    "Write a short apology for missing a friend's phone call.",
    "Write a short invitation to a dinner party.",
    "Rewrite this sentence in simpler words: 'The meeting was postponed.'",
    "What is a metaphor? Reply in a sentence.",
    "What is the difference between 'their' and 'there'?",
    "Write a short slogan for a clean city campaign.",
    "Write a cosy sentence about a warm blanket.",
    "Write a short message congratulating a friend on a new job.",
    "Write a short rhyming line about the wind.",
    "Give a title for a story about a brave little mouse.",
    "Summarize in one sentence: Mina forgot her umbrella, got wet in the rain, and bought a new one.",
    "When do we use a comma?",
    "What is an adverb? Show it in a short sentence.",
    "Explain the meaning of the phrase 'piece of cake'.",
    "What is another word for 'smart'?",
    "Write a short note asking a neighbour to water your plants.",
    "Write a short review of a funny film.",
    "Finish this sentence: 'My favourite place to relax is ...'",
    "Write a friendly reminder to return a borrowed book.",
    "What is a biography?",
    "What makes a story a fairy tale?",
    # English: advice and values
    "Why is it good to learn to ride a bicycle?",
    "Why do people keep diaries?",
    "Give one tip for travelling by train.",
    "How can you show respect to older people?",
    "Why does honesty matter between friends?",
    "How can you be a good friend?",
    "What should you do when you make a mistake?",
    "Why is it important to say thank you?",
    "How can you calm down when you are angry?",
    "Why is it useful to set goals?",
    "Give one tip for being more organized.",
    "Why is volunteering good for a community?",
    # English: everyday things
    "What is a clock used for?",
    "What is a passport?",
    "What is a compass used for?",
    "Why do people use ladders?",
    "What is a tent used for?",
    "What is a wheelbarrow used for?",
    "What is a bakery?",
    "Why are parks good for a town?",
    "What is an airport?",
    "What can children do at a playground?",
    "What is a mirror used for?",
    # Turkish: science and nature
    "Atom nedir? Tek cümleyle anlat.",
    "Mıknatıs nasıl çalışır? Kısaca anlat.",
    "Deprem neden olur?",
    "Fosil nedir?",
    "Kalbin vücudumuzdaki görevi nedir?",
    "Sürüngenlerin ortak özelliği nedir?",
    "Rüzgârın oluşma nedeni nedir?",
    "Erozyon nedir?",
    "Sürtünme nedir? Günlük hayattan bir örnek ver.",
    "Çölde yaşam neden zordur?",
    "Aşı nedir ve bizi nasıl korur?",
    "Mikroskop ne için kullanılır?",
    "Ormanlar neden önemlidir? Bir cümleyle cevap ver.",
    "Tırtıl nasıl kelebeğe dönüşür?",
    "Bazı kuşlar neden göç eder?",
    "Nehir ile göl arasındaki fark nedir?",
    "Bitkiler köklerini ne için kullanır?",
    "Çevre kirliliğini azaltmak için bir öneri ver.",
    # Turkish: health and everyday life
    "Dişlerimizi sağlıklı tutmak için ne yapmalıyız?",
    "Düzenli yürüyüş sağlığa nasıl iyi gelir?",
    "Çok fazla şeker yemek neden zararlıdır?",
    "Bisiklet sürerken neden kask takmalıyız?",
    "Gece daha iyi uyumak için bir öneri ver.",
    "Parmağını kesen biri ilk olarak ne yapmalı?",
    "Dengeli beslenmek ne anlama gelir?",
    "Stresi azaltmak için basit bir yöntem söyle.",
    "Uzun süre ekrana bakarken gözlerimizi nasıl koruyabiliriz?",
    "Odayı düzenli tutmak için bir öneri ver.",
    "Bir telefon görüşmesini kibarca nasıl bitirirsin?",
    "Karşıdan karşıya geçmeden önce ne yapmalıyız?",
    "Market alışverişinde tasarruf etmek için bir öneri ver.",
    "Randevulara zamanında gitmenin bir faydası nedir?",
    "Elektrik faturasını düşürmek için ne yapılabilir?",
    "Yeni taşındığın bir mahallede nasıl arkadaş edinebilirsin?",
    "Büyükanne için güzel bir hediye fikri ver.",
    "Çocuklar ev işlerine nasıl yardım edebilir?",
    # Turkish: cooking
    "Yumurta nasıl haşlanır? Kısaca anlat.",
    "Basit bir salata nasıl hazırlanır?",
    "Meyveleri yemeden önce neden yıkamalıyız?",
    "Yoğurt sütten nasıl elde edilir?",
    "Pilav yaparken işe yarayan bir püf noktası söyle.",
    "Çorbaya lezzet katmak için ne eklenebilir?",
    "Öğleden sonra için sağlıklı bir atıştırmalık öner.",
    "Kızartma ile fırında pişirme arasındaki fark nedir?",
    # Turkish: school and work
    "Derste nasıl iyi not tutabilirim?",
    "Öğretmenler neden ödev verir?",
    "İyi bir kompozisyon yazmak için bir öneri ver.",
    "Bir öğrenci zamanını nasıl daha iyi yönetebilir?",
    "Derste soru sormak neden faydalıdır?",
    "Bir sunuma hazırlanmanın iyi bir yolu nedir?",
    "Okul müdürünün görevi nedir?",
    "İtfaiyeciler insanlara nasıl yardım eder?",
    "Bir mimar ne tasarlar?",
    "Bir çiftçinin günlük işlerinden birini söyle.",
    "İş görüşmesi için bir tavsiye ver.",
    "Takım çalışması nedir?",
    "Çalışırken ara sıra mola vermek neden iyidir?",
    "Özgeçmiş nedir?",
    "Evden çalışırken odaklanmak için bir öneri ver.",
    # Turkish: technology
    "İnternet nedir? Basitçe açıkla.",
    "Şifremizi neden güçlü seçmeliyiz?",
    "Akıllı telefon nedir?",
    "Robot ne demektir? Kısaca tanımla.",
    "Bulaşık makinesi zamandan nasıl tasarruf sağlar?",
    "Arama motoru ne işe yarar?",
    "Tekerlek insanların hayatını nasıl kolaylaştırdı?",
    "Yapay zekâyı basit bir dille tanımla.",
    "Dosyaların yedeğini almak neden önemlidir?",
    # Turkish: language and short writing
    "Sessiz bir sabahı anlatan bir cümle yaz.",
    "Bir arkadaşına geç kaldığın için kısa bir özür mesajı yaz.",
    "Arkadaşlarını pikniğe çağıran kısa bir mesaj yaz.",
    "Atasözü nedir? Bilinen bir atasözü yaz.",
    "Bu cümleyi daha kibar bir şekilde yeniden yaz: 'Kitabı bana ver.'",
    "'Hızlı' kelimesiyle bir cümle kur.",
    "Bir fırın için kısa bir slogan yaz.",
    "Yeni bir iş arkadaşına kısa bir hoş geldin mesajı yaz.",
    "Kaybolan bir köpek yavrusunu anlatan bir hikâyeye başlık öner.",
    "'Etekleri zil çalmak' deyimi ne anlama gelir?",
    "Soru işareti ne zaman kullanılır?",
    "Taze ekmeğin kokusunu bir cümleyle anlat.",
    "Bir cümleyle özetle: Can anahtarlarını evde unuttu, annesini aradı ve kapının açılmasını bekledi.",
    # Turkish: advice
    "İyi bir dinleyici olmak için ne yapmalıyız?",
    "Bir hobi edinmek neden iyidir?",
    "Üzgün hissettiğimizde ne yapabiliriz? Bir öneri ver.",
    "Bütçe yapmak insana nasıl yardımcı olur?",
    "Sabırlı olmak ne demektir?",
    "Yüzme öğrenmenin bir faydasını söyle.",
    "Nezaket nedir? Bir örnekle açıkla.",
)


def load_prompts(cfg: RehearsalConfig) -> list[tuple[str, str | None]]:
    """(instruction, answer or None) for each rehearsal prompt the recipe names: the built-in set, or a
    .txt / .jsonl file. A .jsonl row with an ``output`` carries the base model's answer, written beforehand
    (``python -m ayar.eval.rehearsal``), so prepare does not generate it again."""
    pairs = [(p, None) for p in BUILTIN_PROMPTS] if cfg.prompts == "builtin" else _read_prompt_file(Path(cfg.prompts))
    unique: dict[str, str | None] = {}
    for prompt, answer in pairs:
        if prompt.strip() and prompt.strip() not in unique:
            unique[prompt.strip()] = answer.strip() if answer else None
    if not unique:
        raise UsageError(f"data.rehearsal.prompts: {cfg.prompts} holds no instruction")
    return list(unique.items())[: cfg.max_prompts] if cfg.max_prompts else list(unique.items())


def _read_prompt_file(path: Path) -> list[tuple[str, str | None]]:
    if not path.is_file():
        raise UsageError(f"data.rehearsal.prompts: file {path} does not exist (or use 'builtin')")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".txt":
        return [(line, None) for line in lines]
    if path.suffix != ".jsonl":
        raise UsageError(f"data.rehearsal.prompts: {path} must be .txt (one instruction a line) or .jsonl")
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"data.rehearsal.prompts: {path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("instruction"), str):
            raise UsageError(f"data.rehearsal.prompts: {path}:{number}: needs a string field 'instruction'")
        answer = row.get("output")
        if answer is not None and not isinstance(answer, str):
            raise UsageError(f"data.rehearsal.prompts: {path}:{number}: 'output' must be a string")
        pairs.append((row["instruction"], answer))
    return pairs


# Words that carry no subject: two prompts that share only these are not the same question.
FUNCTION_WORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "by", "can", "could", "do", "does", "for", "from", "give", "how", "i", "in", "is", "it", "its", "me", "my", "name", "of", "on", "one", "or", "please", "s", "tell", "that", "the", "there", "this", "to", "was", "what", "which", "who", "why", "with", "would", "you", "your", "bir", "bu", "da", "de", "için", "mi", "mı", "mu", "mü", "ne", "nedir", "nasıl", "ve", "ya"])


def content_words(text: str) -> set[str]:
    """The lower-cased words of a text, function words left out (for comparing prompts by subject)."""
    return set(re.findall(r"\w+", text.lower())) - FUNCTION_WORDS


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of two texts' content-word sets (1.0 when both have none)."""
    wa, wb = content_words(a), content_words(b)
    return len(wa & wb) / len(wa | wb) if wa | wb else 1.0


def repeats_for_share(answered: int, train_records: int, share: float) -> int:
    """How many times each of ``answered`` rehearsal records appears so that rehearsal is about ``share``
    of the training examples (at least once)."""
    if answered == 0:
        return 0
    wanted = share / (1 - share) * train_records
    return max(1, math.ceil(wanted / answered - 1e-9))


def rehearsal_records(prompts: list[str], answers: list[str], repeats: int) -> list[dict[str, Any]]:
    """Alpaca records (task ``rehearsal``), each pair ``repeats`` times, interleaved."""
    pairs = [{"instruction": p, "output": a, "task": REHEARSAL_TASK}
             for p, a in zip(prompts, answers, strict=True)]
    return [dict(r) for _ in range(repeats) for r in pairs]
