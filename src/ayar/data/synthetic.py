"""A seeded generator of instruction records with verifiable answers, in Turkish and English.

The quickstart needs data that exists offline and whose answers can be checked exactly;
no library ships such a set in both languages, so the project writes its own.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path

from ayar.data.templates import alpaca_user_message

TR_MONTHS = ["Ocak", "Şubat", "Mart", "Nisan", "Mayıs", "Haziran", "Temmuz", "Ağustos", "Eylül", "Ekim",
             "Kasım", "Aralık"]
EN_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
             "October", "November", "December"]

# Common Turkish nouns that follow the regular suffix rules (no loanword exceptions such as saat,
# kalp or rol, whose suffixes do not follow their last vowel): the word tasks and the suffix tasks.
TR_WORDS = [
    "istanbul", "ırmak", "ılık", "işçi", "kitap", "çiçek", "ağaç", "güneş", "şeker", "ılgın", "iğne", "kırmızı",
    "yıldız", "bilgisayar", "öğrenci", "üzüm", "dağ", "deniz", "ışık", "izmir", "sınıf", "kalem", "pencere",
    "kapı", "masa", "defter", "okul", "bahçe", "köprü", "çay", "ev", "araba", "göl", "orman", "şehir", "köy",
    "sokak", "cadde", "bina", "oda", "mutfak", "yatak", "sandalye", "tabak", "bardak", "kaşık", "çatal", "bıçak",
    "ekmek", "peynir", "zeytin", "elma", "armut", "kiraz", "çilek", "limon", "portakal", "domates", "biber",
    "patates", "soğan", "havuç", "balık", "tavuk", "kuş", "kedi", "köpek", "at", "inek", "koyun", "keçi", "arı",
    "kelebek", "böcek", "yaprak", "dal", "kök", "tohum", "toprak", "taş", "kum", "su", "buz", "kar", "yağmur",
    "bulut", "gök", "gün", "hafta", "sabah", "akşam", "gece", "öğretmen", "doktor", "hemşire", "asker", "çocuk",
    "kadın", "adam", "kız", "anne", "baba", "kardeş", "arkadaş", "komşu", "misafir", "gemi", "uçak", "tren",
    "otobüs", "bisiklet", "yol", "köşe", "duvar", "kutu", "çanta", "ayakkabı", "gömlek", "ceket", "şapka",
    "eldiven", "telefon", "ekran", "radyo", "gazete", "dergi", "mektup", "resim", "şarkı", "oyun", "top", "müze",
    "okyanus", "nehir", "tepe", "ova", "ada", "kale", "saray", "pazar", "fırın", "banka", "hastane", "otel",
    "ders", "sınav", "soru", "cevap", "kelime", "cümle", "harf", "sayı", "renk", "ses", "koku", "el", "ayak",
    "göz", "kulak", "burun", "diş", "saç", "baş", "boyun", "kol", "parmak", "bulmaca", "halı", "perde", "lamba",
    "merdiven", "bayrak", "çekiç", "makas", "iplik", "düğme", "cep", "yüzük", "kolye", "tarla", "çiftlik",
]
TR_NOUNS = [w for w in TR_WORDS if w not in ("istanbul", "izmir")]  # proper nouns take an apostrophe
EN_WORDS = [
    "apple", "river", "light", "window", "garden", "bridge", "teacher", "pencil", "school", "music", "planet",
    "orange", "silver", "forest", "island", "market", "doctor", "engine", "letter", "winter", "spring", "summer",
    "autumn", "bottle", "candle", "dragon", "friend", "guitar", "hammer", "jacket", "kitchen", "ladder", "mirror",
    "needle", "pillow", "rabbit", "saddle", "ticket", "violin", "wallet", "basket", "blanket", "button", "carpet",
    "castle", "cherry", "circle", "cloud", "coffee", "cotton", "desert", "dinner", "finger", "flower", "feather",
    "garlic", "ginger", "glove", "harbor", "helmet", "honey", "insect", "jungle", "kettle", "lemon", "lizard",
    "marble", "meadow", "monkey", "morning", "mountain", "napkin", "noodle", "ocean", "office", "onion", "oyster",
    "paper", "parrot", "pepper", "pocket", "potato", "puzzle", "rocket", "salmon", "shadow", "shovel", "spider", "sparrow",
    "statue", "stone", "sugar", "table", "tiger", "tomato", "tunnel", "turtle", "valley", "wagon", "water",
    "yellow", "zebra", "anchor", "arrow", "banana", "beetle", "camera", "canyon", "cookie", "copper", "crystal",
]

_TR_UPPER = str.maketrans({"i": "İ", "ı": "I"})


def turkish_upper(text: str) -> str:
    """Upper-case with Turkish rules: i→İ and ı→I (str.upper() maps i→I, which is wrong in Turkish)."""
    return text.translate(_TR_UPPER).upper()


def _add(rng: random.Random, lang: str) -> dict[str, str]:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    if lang == "tr":
        return {"instruction": "İki sayıyı topla.", "input": f"{a} + {b}", "output": str(a + b)}
    return {"instruction": "Add the two numbers.", "input": f"{a} + {b}", "output": str(a + b)}


def _reverse(rng: random.Random, lang: str) -> dict[str, str]:
    word = rng.choice(TR_WORDS if lang == "tr" else EN_WORDS)
    instruction = "Kelimeyi tersten yaz." if lang == "tr" else "Write the word backwards."
    return {"instruction": instruction, "input": word, "output": word[::-1]}


def _upper(rng: random.Random, lang: str) -> dict[str, str]:
    if lang == "tr":
        word = rng.choice(TR_WORDS)
        return {"instruction": "Kelimeyi büyük harfle yaz.", "input": word, "output": turkish_upper(word)}
    word = rng.choice(EN_WORDS)
    return {"instruction": "Write the word in capital letters.", "input": word, "output": word.upper()}


def _date(rng: random.Random, lang: str) -> dict[str, str]:
    year, month, day = rng.randint(1990, 2030), rng.randint(1, 12), rng.randint(1, 28)
    iso = f"{year:04d}-{month:02d}-{day:02d}"
    if lang == "tr":
        return {"instruction": "Tarihi yazıyla yaz.", "input": iso, "output": f"{day} {TR_MONTHS[month - 1]} {year}"}
    return {"instruction": "Write the date in words.", "input": iso, "output": f"{EN_MONTHS[month - 1]} {day}, {year}"}


def _month(rng: random.Random, lang: str) -> dict[str, str]:
    year, month, day = rng.randint(1990, 2030), rng.randint(1, 12), rng.randint(1, 28)
    iso = f"{year:04d}-{month:02d}-{day:02d}"
    if lang == "tr":
        return {"instruction": "Tarihteki ayın adını yaz.", "input": iso, "output": TR_MONTHS[month - 1]}
    return {"instruction": "Write the name of the month in the date.", "input": iso,
            "output": EN_MONTHS[month - 1]}


def _parity(rng: random.Random, lang: str) -> dict[str, str]:
    number = rng.randint(0, 9999)
    if lang == "tr":
        return {"instruction": "Sayı çift mi tek mi?", "input": str(number), "output": "tek" if number % 2 else "çift"}
    return {"instruction": "Is the number even or odd?", "input": str(number), "output": "odd" if number % 2 else "even"}


TR_ONES = ["", "bir", "iki", "üç", "dört", "beş", "altı", "yedi", "sekiz", "dokuz"]
TR_TENS = ["", "on", "yirmi", "otuz", "kırk", "elli", "altmış", "yetmiş", "seksen", "doksan"]
EN_ONES = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
           "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
EN_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def turkish_number_words(number: int) -> str:
    """0-999,999 in Turkish words: 1984 -> 'bin dokuz yüz seksen dört' (no 'bir' before yüz and bin)."""
    if number == 0:
        return "sıfır"
    thousands, rest = divmod(number, 1000)
    words = []
    if thousands:
        words += ([turkish_number_words(thousands)] if thousands > 1 else []) + ["bin"]
    hundreds, rest = divmod(rest, 100)
    if hundreds:
        words += ([TR_ONES[hundreds]] if hundreds > 1 else []) + ["yüz"]
    tens, ones = divmod(rest, 10)
    words += [w for w in (TR_TENS[tens], TR_ONES[ones]) if w]
    return " ".join(words)


def english_number_words(number: int) -> str:
    """0-999,999 in English words, American style: 347 -> 'three hundred forty-seven'."""
    if number == 0:
        return "zero"
    thousands, rest = divmod(number, 1000)
    words = [english_number_words(thousands), "thousand"] if thousands else []
    hundreds, rest = divmod(rest, 100)
    if hundreds:
        words += [EN_ONES[hundreds], "hundred"]
    if rest >= 20:
        words.append(EN_TENS[rest // 10] + (f"-{EN_ONES[rest % 10]}" if rest % 10 else ""))
    elif rest:
        words.append(EN_ONES[rest])
    return " ".join(words)


def _number_words(rng: random.Random, lang: str) -> dict[str, str]:
    number = rng.randint(0, 999)
    if lang == "tr":
        return {"instruction": "Sayıyı yazıyla yaz.", "input": str(number), "output": turkish_number_words(number)}
    return {"instruction": "Write the number in words.", "input": str(number), "output": english_number_words(number)}


BACK_VOWELS, FRONT_VOWELS = set("aıou"), set("eiöü")
VOICELESS = set("çfhkpsşt")  # "fıstıkçı şahap": after these, a suffix's d hardens to t


def _last_vowel_is_back(word: str) -> bool:
    return next(c for c in reversed(word) if c in BACK_VOWELS | FRONT_VOWELS) in BACK_VOWELS


def turkish_suffix(word: str, case: str) -> str:
    """The word with a suffix that follows vowel harmony (and, for d-suffixes, consonant hardening).

    ``case``: "plural" (-lar/-ler), "locative" (-da/-de/-ta/-te) or "ablative" (-dan/-den/-tan/-ten).
    """
    vowel = "a" if _last_vowel_is_back(word) else "e"
    if case == "plural":
        return f"{word}l{vowel}r"
    d = "t" if word[-1] in VOICELESS else "d"
    return f"{word}{d}{vowel}" + ("n" if case == "ablative" else "")


SUFFIX_INSTRUCTIONS = {
    "plural": ("Kelimenin çoğulunu yaz.", "Write the Turkish plural of the word."),
    "locative": ("Kelimeye bulunma hâli ekini (-de/-da) ekle.", "Add the Turkish locative suffix (-de/-da) to the word."),
    "ablative": ("Kelimeye ayrılma hâli ekini (-den/-dan) ekle.",
                 "Add the Turkish ablative suffix (-den/-dan) to the word."),
}


def _suffix_task(case: str) -> Callable[[random.Random, str], dict[str, str]]:
    def task(rng: random.Random, lang: str) -> dict[str, str]:
        word = rng.choice(TR_NOUNS)  # Turkish words either way; the instruction is in the record's language
        tr, en = SUFFIX_INSTRUCTIONS[case]
        return {"instruction": tr if lang == "tr" else en, "input": word, "output": turkish_suffix(word, case)}
    task.__doc__ = f"A Turkish word and its {case} form."
    return task


# Topic classification whose only signal is one topic word in a neutral sentence. Grouping the
# split by word keeps test words unseen in training, so only a model that already knows what
# words mean (a pretrained encoder) can do better than chance: the transfer-learning demo.
TOPIC_WORDS = {
    "sports": ["football", "tennis", "basketball", "swimming", "marathon", "cycling", "volleyball", "boxing",
               "golf", "hockey", "rugby", "skiing", "wrestling", "baseball", "cricket", "badminton", "rowing",
               "archery", "fencing", "handball"],
    "food": ["pizza", "soup", "bread", "cheese", "pasta", "salad", "chocolate", "rice", "burger", "pancakes",
             "sushi", "noodles", "yogurt", "cookies", "sandwich", "omelette", "lasagna", "kebab", "dumplings",
             "porridge"],
    "technology": ["laptop", "software", "smartphone", "processor", "database", "internet", "robot", "keyboard",
                   "compiler", "server", "algorithm", "browser", "microchip", "router", "tablet", "firmware",
                   "encryption", "satellite", "printer", "spreadsheet"],
    "weather": ["rain", "snow", "storm", "sunshine", "wind", "fog", "thunder", "hail", "drizzle", "blizzard",
                "humidity", "frost", "heatwave", "hurricane", "tornado", "rainbow", "lightning", "sleet",
                "monsoon", "drought"],
}
TOPIC_TEMPLATES = ["My friend talked about {w} all evening.", "There was a long article about {w} today.",
                   "She asked me what I think of {w}.", "We spent the whole afternoon on {w}.",
                   "Everyone at the table was discussing {w}.", "He wrote a short note about {w}.",
                   "The podcast this week was about {w}.", "I keep thinking about {w}."]


def _topic(rng: random.Random, lang: str) -> dict[str, str]:
    label = rng.choice(sorted(TOPIC_WORDS))
    word = rng.choice(TOPIC_WORDS[label])
    return {"text": rng.choice(TOPIC_TEMPLATES).format(w=word), "label": label, "word": word}


TASKS: dict[str, Callable[[random.Random, str], dict[str, str]]] = {
    "add": _add,
    "reverse": _reverse,
    "upper": _upper,
    "date": _date,
    "month": _month,
    "parity": _parity,
    "number_words": _number_words,
    "plural": _suffix_task("plural"),
    "locative": _suffix_task("locative"),
    "ablative": _suffix_task("ablative"),
    "topic": _topic,
}


# The part of the input each answer depends on, as (start, end) within the input; others use all of it.
EVIDENCE = {"parity": lambda text: (len(text) - 1, len(text)), "month": lambda text: (5, 7)}  # last digit; MM


def input_guide_span(record: dict, task: str = "") -> list[list[int]]:
    """Where an alpaca record's answer evidence lies in its user message: the input, or for ``parity`` its
    last digit and for ``month`` the month digits ([] when there is no input)."""
    text = record.get("input")
    if not text:
        return []
    message = alpaca_user_message(record["instruction"], text)
    offset = len(message) - len(text)  # the input ends the user message
    start, end = EVIDENCE[task](text) if task in EVIDENCE else (0, len(text))
    return [[offset + start, offset + end]]


def generate_records(num_records: int, seed: int, languages: list[str], tasks: list[str],
                     guide_spans: bool = False) -> Iterator[dict]:
    """Yield distinct alpaca records (instruction, input, output) plus id, task and lang; seeded.

    Records never repeat, so no test record can also be a training record. Tasks with a small
    space (a word list) run out first, so larger sets hold proportionally more sums and dates.
    With ``guide_spans`` each record with an input also names where its answer's evidence lies in
    the user message (``guide_spans: [[start, end]]``, for the ``guided_attention`` method; see
    ``input_guide_span``); the records are otherwise the same as without it.
    """
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown synthetic task(s) {unknown}; choose from {sorted(TASKS)}")
    rng = random.Random(seed)

    def draw(_: int) -> tuple[str, str, dict]:
        task, lang = rng.choice(tasks), rng.choice(languages)
        return task, lang, TASKS[task](rng, lang)

    drawn = distinct_draws(draw, lambda record: tuple(sorted(record.items())), num_records)
    for index, (task, lang, record) in enumerate(drawn):
        if guide_spans and record.get("input"):
            record["guide_spans"] = input_guide_span(record, task)
        yield {"id": f"syn-{index:06d}", "task": task, "lang": lang, **record}


def distinct_draws(draw: Callable[[int], tuple[str, str, dict]], key: Callable[[dict], Hashable],
                   count: int) -> Iterator[tuple[str, str, dict]]:
    """Up to ``count`` (task, lang, record) draws whose records differ by ``key``, in draw order.

    ``draw`` gets the index the record takes if it is new. The tries are bounded, so a task space smaller
    than ``count`` ends the stream early instead of looping forever.
    """
    seen: set[Hashable] = set()
    for _ in range(count * 50):
        if len(seen) == count:
            return
        task, lang, record = draw(len(seen))
        identity = key(record)
        if identity in seen:
            continue
        seen.add(identity)
        yield task, lang, record


def as_preference(record: dict, seed: int) -> dict:
    """The record as a preference pair: its answer chosen, the answer of another record of its task rejected.

    The wrong answer is drawn from the task's own generator (a seeded stream per record), so it has the
    right form (a number, a word, a date) and differs from the right one only in being wrong.
    """
    rng = random.Random(f"{seed}:{record['id']}")
    rejected = record["output"]
    for _ in range(50):
        if rejected != record["output"]:
            break
        rejected = TASKS[record["task"]](rng, record["lang"])["output"]
    prompt = alpaca_user_message(record["instruction"], record.get("input"))
    return {"id": record["id"], "task": record["task"], "lang": record["lang"], "prompt": prompt,
            "chosen": record["output"], "rejected": rejected}


def write_jsonl(records: Iterator[dict] | list[dict], path: Path) -> int:
    """Write records as UTF-8 JSON lines; return how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
