"""`email-normalize`: trims and ASCII-lowercases e-mail addresses and flags free-mail domains.

See ../README.md for the exact specification. Build: `quiver plugin build .`
"""

import quiver
from quiver import BOOLEAN, UTF8, Column, Plan, PluginError, param

# ASCII white space, as the specification lists it.
WHITESPACE = b" \t\n\r\f\v"


class EmailNormalize(quiver.Plugin):
    name = "email-normalize"
    version = "0.1.0"
    description = "Trims and lowercases e-mail addresses and flags free-mail domains"
    params = [
        param.text("column", "a utf8 column of e-mail addresses", required=True),
        param.text_list(
            "free-domains",
            "domains of free mail providers",
            default=["gmail.com", "yahoo.com", "hotmail.com", "outlook.com"],
        ),
        param.text("flag", "the name of the boolean column it adds", default="is_free_mail"),
    ]

    def __init__(self, params):
        self.column = params.text("column")
        self.flag = params.text("flag")
        # bytes.lower() lowercases A–Z only, exactly as the addresses are lowercased. Kept
        # with their "@" so that one slice of an address can be looked up (see transform).
        self.free_at = frozenset(b"@" + d.encode().lower() for d in params.text_list("free-domains"))

    def prepare(self, schema):
        field = quiver.expect_type(schema, self.column, [UTF8])
        if any(f.name == self.flag for f in schema):
            raise PluginError(
                f"the flag column `{self.flag}` already exists in the input; "
                "choose another name with `flag`",
                column=self.flag,
            )
        # Read only `column`; replace it in place and add `flag` right after it.
        return (
            Plan.passthrough(schema)
            .compute(self.column, UTF8, field.nullable)
            .computed(self.flag, BOOLEAN, True, after=self.column)
        )

    def transform(self, batch):
        emails = batch.columns[0]
        free_at = self.free_at
        # Work on bytes: strip(WHITESPACE) and bytes.lower() touch ASCII only. Null rows hold
        # some bytes (usually none); the validity bitmap keeps them null in both outputs.
        addresses = [s.strip(WHITESPACE).lower() for s in emails.slices()]
        # a[a.rfind(b"@"):] is the part from the last "@"; without one it is the last byte
        # (or nothing), which is never "@" + a domain. bytes([...]) makes one 0/1 byte per row.
        flags = bytes([a[a.rfind(b"@"):] in free_at for a in addresses])
        return batch.output([
            Column.utf8(self.column, addresses, validity=emails.validity),
            Column.boolean(self.flag, flags, validity=emails.validity),
        ])


# componentize-py exports the `transformer` interface from this name.
Transformer = quiver.export(EmailNormalize)
