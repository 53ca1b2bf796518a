# Writes input.jsonl and expected.jsonl (the reference the four implementations must match).
import json
rows = [
    (1, "Alice@GMail.com", 10),
    (2, "  bob@example.ORG\t", 20),
    (3, None, 30),
    (4, "carol@yahoo.com", 40),
    (5, "dave@@hotmail.com", 50),
    (6, "no-at-sign", 60),
    (7, "Émile@Outlook.COM", 70),
    (8, "", 80),
    (9, "x@gmail.com.evil", 90),
    (10, "\vUPPER@EXAMPLE.COM ", 100),
    (11, "Ölaf@ÖSTERREICH.at", 110),
    (12, "a@b@yahoo.com", 120),
]
free = ["gmail.com", "yahoo.com", "hotmail.com", "outlook.com"]
ws = " \t\n\r\f\v"
def lower(s):
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)
with open("input.jsonl", "w") as f:
    for i, e, a in rows:
        f.write(json.dumps({"id": i, "email": e, "amount": a}, ensure_ascii=False) + "\n")
with open("expected.jsonl", "w") as f:
    for i, e, a in rows:
        if e is None:
            out = {"id": i, "email": None, "is_free_mail": None, "amount": a}
        else:
            n = lower(e.strip(ws))
            flag = "@" in n and n.rsplit("@", 1)[1] in free
            out = {"id": i, "email": n, "is_free_mail": flag, "amount": a}
        f.write(json.dumps(out, ensure_ascii=False) + "\n")
