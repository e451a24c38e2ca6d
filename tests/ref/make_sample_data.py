#!/usr/bin/env python3
"""Bundled sample data shaped like HuggingFaceH4/Multilingual-Thinking.

Each row has the dataset's columns: reasoning_language, developer, user, analysis, final, and messages
([system "reasoning language: X\\n\\n{developer}", user, assistant {content: final, thinking: analysis}],
with "thinking": null on the system and user messages, as the dataset has). Questions are small
arithmetic word problems in ten languages; the chain of thought is written in the row's reasoning
language (which often differs from the question's), the answer in the question's language. Everything
is drawn from a seeded generator, so the output is the same on every run.

    python3 tests/ref/make_sample_data.py                      # data/samples/multilingual_sample.jsonl (100 rows)
    python3 tests/ref/make_sample_data.py --rows 1000 --out /tmp/mt1000.jsonl.gz   # the acceptance set
"""
import argparse
import gzip
import json
import os
import random

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DEFAULT_OUT = os.path.join(ROOT, "data/samples/multilingual_sample.jsonl")

LANGS = {
    "English": {
        "mul": "What is {a} times {b}?",
        "hours": "How many minutes are there in {a} hours?",
        "apples": "I have {a} apples and I eat {b}. How many apples are left?",
        "ans_mul": "{a} × {b} = {r}. So the answer is {r}.",
        "ans_hours": "There are {r} minutes in {a} hours, because each hour has 60 minutes.",
        "ans_apples": "You have {r} apples left ({a} − {b} = {r}).",
        "think_mul": ["The user asks for the product of {a} and {b}.",
                      "I can split it: {a} × {b} = {a} × {b1} + {a} × {b2} = {p1} + {p2} = {r}.",
                      "Let me double-check with another grouping: the result {r} looks right."],
        "think_hours": ["The user wants to convert {a} hours into minutes.",
                        "One hour is 60 minutes, so I multiply {a} by 60.",
                        "{a} × 60 = {r}. That is the number of minutes."],
        "think_apples": ["This is a simple subtraction problem about apples.",
                         "Start with {a} apples, remove the {b} that were eaten.",
                         "{a} − {b} = {r}, so {r} apples remain."],
        "filler": ["I should answer clearly and in the user's language.",
                   "A short explanation of the steps will help the user follow along.",
                   "No tricks here; the numbers are given directly."],
    },
    "French": {
        "mul": "Combien font {a} fois {b} ?",
        "hours": "Combien y a-t-il de minutes dans {a} heures ?",
        "apples": "J'ai {a} pommes et j'en mange {b}. Combien de pommes me reste-t-il ?",
        "ans_mul": "{a} × {b} = {r}. La réponse est donc {r}.",
        "ans_hours": "Il y a {r} minutes dans {a} heures, car chaque heure compte 60 minutes.",
        "ans_apples": "Il vous reste {r} pommes ({a} − {b} = {r}).",
        "think_mul": ["L'utilisateur demande le produit de {a} et {b}.",
                      "Je peux décomposer : {a} × {b} = {a} × {b1} + {a} × {b2} = {p1} + {p2} = {r}.",
                      "Vérifions autrement : le résultat {r} semble correct."],
        "think_hours": ["L'utilisateur veut convertir {a} heures en minutes.",
                        "Une heure fait 60 minutes, donc je multiplie {a} par 60.",
                        "{a} × 60 = {r}. C'est le nombre de minutes."],
        "think_apples": ["C'est une simple soustraction avec des pommes.",
                         "On part de {a} pommes et on enlève les {b} mangées.",
                         "{a} − {b} = {r}, il reste donc {r} pommes."],
        "filler": ["Je dois répondre clairement, dans la langue de l'utilisateur.",
                   "Une courte explication des étapes aidera l'utilisateur à suivre.",
                   "Pas de piège ici ; les nombres sont donnés directement."],
    },
    "German": {
        "mul": "Was ist {a} mal {b}?",
        "hours": "Wie viele Minuten haben {a} Stunden?",
        "apples": "Ich habe {a} Äpfel und esse {b}. Wie viele Äpfel bleiben übrig?",
        "ans_mul": "{a} × {b} = {r}. Die Antwort ist also {r}.",
        "ans_hours": "{a} Stunden haben {r} Minuten, denn jede Stunde hat 60 Minuten.",
        "ans_apples": "Es bleiben {r} Äpfel übrig ({a} − {b} = {r}).",
        "think_mul": ["Der Nutzer fragt nach dem Produkt von {a} und {b}.",
                      "Ich zerlege: {a} × {b} = {a} × {b1} + {a} × {b2} = {p1} + {p2} = {r}.",
                      "Zur Kontrolle rechne ich anders gruppiert: {r} stimmt."],
        "think_hours": ["Der Nutzer möchte {a} Stunden in Minuten umrechnen.",
                        "Eine Stunde hat 60 Minuten, also multipliziere ich {a} mit 60.",
                        "{a} × 60 = {r}. Das ist die Anzahl der Minuten."],
        "think_apples": ["Das ist eine einfache Subtraktion mit Äpfeln.",
                         "Wir beginnen mit {a} Äpfeln und ziehen die {b} gegessenen ab.",
                         "{a} − {b} = {r}, also bleiben {r} Äpfel."],
        "filler": ["Ich sollte klar und in der Sprache des Nutzers antworten.",
                   "Eine kurze Erklärung der Schritte hilft beim Nachvollziehen.",
                   "Hier gibt es keinen Trick; die Zahlen sind direkt gegeben."],
    },
    "Spanish": {
        "mul": "¿Cuánto es {a} por {b}?",
        "hours": "¿Cuántos minutos hay en {a} horas?",
        "apples": "Tengo {a} manzanas y me como {b}. ¿Cuántas manzanas me quedan?",
        "ans_mul": "{a} × {b} = {r}. Así que la respuesta es {r}.",
        "ans_hours": "En {a} horas hay {r} minutos, porque cada hora tiene 60 minutos.",
        "ans_apples": "Te quedan {r} manzanas ({a} − {b} = {r}).",
        "think_mul": ["El usuario pide el producto de {a} y {b}.",
                      "Puedo descomponerlo: {a} × {b} = {a} × {b1} + {a} × {b2} = {p1} + {p2} = {r}.",
                      "Lo compruebo de otra forma: {r} parece correcto."],
        "think_hours": ["El usuario quiere convertir {a} horas a minutos.",
                        "Una hora son 60 minutos, así que multiplico {a} por 60.",
                        "{a} × 60 = {r}. Ese es el número de minutos."],
        "think_apples": ["Es una resta sencilla con manzanas.",
                         "Empezamos con {a} manzanas y quitamos las {b} que se comieron.",
                         "{a} − {b} = {r}, así que quedan {r} manzanas."],
        "filler": ["Debo responder con claridad y en el idioma del usuario.",
                   "Una breve explicación de los pasos ayudará al usuario.",
                   "No hay trampa; los números se dan directamente."],
    },
    "Italian": {
        "mul": "Quanto fa {a} per {b}?",
        "hours": "Quanti minuti ci sono in {a} ore?",
        "apples": "Ho {a} mele e ne mangio {b}. Quante mele mi restano?",
        "ans_mul": "{a} × {b} = {r}. Quindi la risposta è {r}.",
        "ans_hours": "In {a} ore ci sono {r} minuti, perché ogni ora ha 60 minuti.",
        "ans_apples": "Ti restano {r} mele ({a} − {b} = {r}).",
        "think_mul": ["L'utente chiede il prodotto di {a} e {b}.",
                      "Posso scomporre: {a} × {b} = {a} × {b1} + {a} × {b2} = {p1} + {p2} = {r}.",
                      "Controllo in un altro modo: {r} sembra corretto."],
        "think_hours": ["L'utente vuole convertire {a} ore in minuti.",
                        "Un'ora è 60 minuti, quindi moltiplico {a} per 60.",
                        "{a} × 60 = {r}. Questo è il numero di minuti."],
        "think_apples": ["È una semplice sottrazione con le mele.",
                         "Si parte da {a} mele e si tolgono le {b} mangiate.",
                         "{a} − {b} = {r}, quindi restano {r} mele."],
        "filler": ["Devo rispondere in modo chiaro e nella lingua dell'utente.",
                   "Una breve spiegazione dei passaggi aiuterà l'utente.",
                   "Nessun trucco; i numeri sono dati direttamente."],
    },
    "Portuguese": {
        "mul": "Quanto é {a} vezes {b}?",
        "hours": "Quantos minutos há em {a} horas?",
        "apples": "Tenho {a} maçãs e como {b}. Quantas maçãs sobram?",
        "ans_mul": "{a} × {b} = {r}. Portanto, a resposta é {r}.",
        "ans_hours": "Há {r} minutos em {a} horas, porque cada hora tem 60 minutos.",
        "ans_apples": "Sobram {r} maçãs ({a} − {b} = {r}).",
        "think_mul": ["O usuário pede o produto de {a} e {b}.",
                      "Posso decompor: {a} × {b} = {a} × {b1} + {a} × {b2} = {p1} + {p2} = {r}.",
                      "Verificando de outra forma: {r} parece certo."],
        "think_hours": ["O usuário quer converter {a} horas em minutos.",
                        "Uma hora tem 60 minutos, então multiplico {a} por 60.",
                        "{a} × 60 = {r}. Esse é o número de minutos."],
        "think_apples": ["É uma subtração simples com maçãs.",
                         "Começamos com {a} maçãs e tiramos as {b} comidas.",
                         "{a} − {b} = {r}, então sobram {r} maçãs."],
        "filler": ["Devo responder com clareza e no idioma do usuário.",
                   "Uma breve explicação dos passos ajudará o usuário.",
                   "Não há pegadinha; os números são dados diretamente."],
    },
    "Chinese": {
        "mul": "{a}乘以{b}等于多少？",
        "hours": "{a}小时有多少分钟？",
        "apples": "我有{a}个苹果，吃了{b}个。还剩多少个苹果？",
        "ans_mul": "{a} × {b} = {r}。所以答案是{r}。",
        "ans_hours": "{a}小时有{r}分钟，因为每小时有60分钟。",
        "ans_apples": "还剩{r}个苹果（{a} − {b} = {r}）。",
        "think_mul": ["用户想知道{a}和{b}的乘积。",
                      "可以拆开计算：{a} × {b} = {a} × {b1} + {a} × {b2} = {p1} + {p2} = {r}。",
                      "换一种分组再检查一遍：{r}是对的。"],
        "think_hours": ["用户想把{a}小时换算成分钟。",
                        "一小时是60分钟，所以用{a}乘以60。",
                        "{a} × 60 = {r}，这就是分钟数。"],
        "think_apples": ["这是一个关于苹果的简单减法题。",
                         "从{a}个苹果开始，减去吃掉的{b}个。",
                         "{a} − {b} = {r}，所以剩下{r}个苹果。"],
        "filler": ["我应该用用户的语言清楚地回答。",
                   "简短地解释步骤会让用户更容易理解。",
                   "这里没有陷阱，数字都直接给出了。"],
    },
    "Japanese": {
        "mul": "{a}かける{b}はいくつですか？",
        "hours": "{a}時間は何分ですか？",
        "apples": "りんごが{a}個あって、{b}個食べました。残りは何個ですか？",
        "ans_mul": "{a} × {b} = {r}です。答えは{r}です。",
        "ans_hours": "{a}時間は{r}分です。1時間は60分だからです。",
        "ans_apples": "残りのりんごは{r}個です（{a} − {b} = {r}）。",
        "think_mul": ["ユーザーは{a}と{b}の積を求めている。",
                      "分けて計算する：{a} × {b} = {a} × {b1} + {a} × {b2} = {p1} + {p2} = {r}。",
                      "別の方法で確認すると、{r}で正しい。"],
        "think_hours": ["ユーザーは{a}時間を分に換算したい。",
                        "1時間は60分なので、{a}に60を掛ける。",
                        "{a} × 60 = {r}。これが分の数だ。"],
        "think_apples": ["りんごの簡単な引き算の問題だ。",
                         "{a}個から食べた{b}個を引く。",
                         "{a} − {b} = {r}なので、{r}個残る。"],
        "filler": ["ユーザーの言語で分かりやすく答えるべきだ。",
                   "手順を短く説明すると理解しやすい。",
                   "ひっかけはなく、数字はそのまま与えられている。"],
    },
    "Russian": {
        "mul": "Сколько будет {a} умножить на {b}?",
        "hours": "Сколько минут в {a} часах?",
        "apples": "У меня {a} яблок, и я съел {b}. Сколько яблок осталось?",
        "ans_mul": "{a} × {b} = {r}. Значит, ответ — {r}.",
        "ans_hours": "В {a} часах {r} минут, потому что в каждом часе 60 минут.",
        "ans_apples": "Осталось {r} яблок ({a} − {b} = {r}).",
        "think_mul": ["Пользователь спрашивает произведение {a} и {b}.",
                      "Разложу: {a} × {b} = {a} × {b1} + {a} × {b2} = {p1} + {p2} = {r}.",
                      "Проверю другим способом: {r} выглядит верно."],
        "think_hours": ["Пользователь хочет перевести {a} часов в минуты.",
                        "В одном часе 60 минут, поэтому умножаю {a} на 60.",
                        "{a} × 60 = {r}. Это число минут."],
        "think_apples": ["Это простая задача на вычитание с яблоками.",
                         "Начинаем с {a} яблок и убираем {b} съеденных.",
                         "{a} − {b} = {r}, значит, осталось {r} яблок."],
        "filler": ["Нужно ответить ясно и на языке пользователя.",
                   "Короткое объяснение шагов поможет пользователю.",
                   "Подвоха нет; числа даны прямо."],
    },
    "Arabic": {
        "mul": "كم يساوي {a} ضرب {b}؟",
        "hours": "كم دقيقة في {a} ساعات؟",
        "apples": "لدي {a} تفاحة وأكلت {b}. كم تفاحة بقيت؟",
        "ans_mul": "{a} × {b} = {r}. إذن الجواب هو {r}.",
        "ans_hours": "في {a} ساعات يوجد {r} دقيقة، لأن كل ساعة فيها 60 دقيقة.",
        "ans_apples": "بقي لديك {r} تفاحة ({a} − {b} = {r}).",
        "think_mul": ["يسأل المستخدم عن حاصل ضرب {a} و{b}.",
                      "يمكنني التجزئة: {a} × {b} = {a} × {b1} + {a} × {b2} = {p1} + {p2} = {r}.",
                      "أتحقق بطريقة أخرى: النتيجة {r} صحيحة."],
        "think_hours": ["يريد المستخدم تحويل {a} ساعات إلى دقائق.",
                        "الساعة 60 دقيقة، لذا أضرب {a} في 60.",
                        "{a} × 60 = {r}. هذا هو عدد الدقائق."],
        "think_apples": ["هذه مسألة طرح بسيطة عن التفاح.",
                         "نبدأ بـ{a} تفاحة ونطرح {b} أُكلت.",
                         "{a} − {b} = {r}، إذن بقيت {r} تفاحة."],
        "filler": ["يجب أن أجيب بوضوح وبلغة المستخدم.",
                   "شرح قصير للخطوات سيساعد المستخدم.",
                   "لا توجد خدعة هنا؛ الأرقام معطاة مباشرة."],
    },
}

DEVELOPERS = [
    "You are an AI chatbot with a lively and energetic personality.",
    "You are a patient math tutor who explains each step.",
    "You are a concise assistant. Keep answers short and exact.",
    "You are a friendly helper who always double-checks arithmetic.",
]


def make_row(rng):
    names = list(LANGS)
    user_lang, reason_lang = rng.choice(names), rng.choice(names)
    kind = rng.choice(["mul", "hours", "apples"])
    if kind == "mul":
        a, b = rng.randint(12, 999), rng.randint(12, 99)
        r = a * b
    elif kind == "hours":
        a, b = rng.randint(2, 48), 0
        r = a * 60
    else:
        a = rng.randint(5, 60)
        b = rng.randint(1, a - 1)
        r = a - b
    b1 = (b // 10) * 10
    b2 = b - b1
    v = dict(a=a, b=b, r=r, b1=b1, b2=b2, p1=a * b1, p2=a * b2)
    U, R = LANGS[user_lang], LANGS[reason_lang]
    developer = rng.choice(DEVELOPERS)
    question = U[kind].format(**v)
    steps = [s.format(**v) for s in R["think_" + kind]]
    filler = R["filler"][:]
    rng.shuffle(filler)
    # Several paragraphs, like the dataset's long chains of thought.
    paras = [" ".join(steps[:2]), filler[0], " ".join(steps[1:]), " ".join(filler[1:]), steps[-1]]
    analysis = "\n\n".join(paras[: rng.randint(3, 5)])
    final = U["ans_" + kind].format(**v)
    if rng.random() < 0.5:
        final += "\n\n" + U["ans_" + kind].format(**v)
    system = f"reasoning language: {reason_lang}\n\n{developer}"
    return {
        "reasoning_language": reason_lang,
        "developer": developer,
        "user": question,
        "analysis": analysis,
        "final": final,
        "messages": [
            {"content": system, "role": "system", "thinking": None},
            {"content": question, "role": "user", "thinking": None},
            {"content": final, "role": "assistant", "thinking": analysis},
        ],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", default=DEFAULT_OUT, help="*.jsonl or *.jsonl.gz")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    lines = [json.dumps(make_row(rng), ensure_ascii=False) + "\n" for _ in range(args.rows)]
    data = "".join(lines).encode()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if args.out.endswith(".gz"):
        with open(args.out, "wb") as f:
            f.write(gzip.compress(data, mtime=0))
    else:
        with open(args.out, "wb") as f:
            f.write(data)
    print(f"wrote {args.out}: {args.rows} rows, {len(data)} bytes of JSONL")


if __name__ == "__main__":
    main()
