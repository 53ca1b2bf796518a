// `email-normalize` with the JavaScript kit: trims and ASCII-lowercases an e-mail column in one
// pass over its UTF-8 bytes and flags free-mail domains (see `../README.md` for the exact rules).
// Only ASCII bytes change, so the work stays on the UTF-8 bytes (typed arrays): no text is
// decoded or encoded.

import {
  Column, DataType, OutputBatch, Plan, PluginError, exportPlugin, expectType, packBits, param,
} from './quiver.js';

// ASCII white space: space, \t, \n, \v, \f, \r.
const SPACE = new Uint8Array(256);
for (const b of [0x20, 0x09, 0x0a, 0x0b, 0x0c, 0x0d]) SPACE[b] = 1;

const asciiLower = (s) => s.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));

class EmailNormalize {
  static describe() {
    return {
      name: 'email-normalize',
      version: '0.1.0',
      description: 'trims and lowercases e-mail addresses and flags free-mail domains',
      params: [
        param.text('column', 'the utf8 column of addresses').required(),
        param.textList('free-domains', 'free-mail domains')
          .default(['gmail.com', 'yahoo.com', 'hotmail.com', 'outlook.com']),
        param.text('flag', 'name of the boolean column added').default('is_free_mail'),
      ],
    };
  }

  constructor(params) {
    this.column = params.text('column');
    this.flag = params.text('flag');
    const encoder = new TextEncoder();
    this.free = params.textList('free-domains').map((d) => encoder.encode(asciiLower(d)));
  }

  prepare(input) {
    const field = expectType(input, this.column, [DataType.utf8]);
    if (input.some((f) => f.name === this.flag)) {
      throw new PluginError(`the flag column \`${this.flag}\` already exists in the input`);
    }
    return Plan.passthrough(input)
      .compute(this.column, DataType.utf8, field.nullable)
      .computedAfter(this.column, this.flag, DataType.boolean, true);
  }

  // Whether buf[from..to] is one of the free domains.
  isFree(buf, from, to) {
    const n = to - from;
    const free = this.free;
    for (let j = 0; j < free.length; j++) {
      const d = free[j];
      if (d.length !== n) continue;
      let k = 0;
      while (k < n && d[k] === buf[from + k]) k++;
      if (k === n) return true;
    }
    return false;
  }

  transform(batch) {
    const rows = batch.rows;
    const emails = batch.columns[0];
    const bytes = emails.dataAs('bytes'); // Uint8Array: every address, back to back
    const offsets = emails.offsets; // Int32Array: row i is bytes[offsets[i]..offsets[i + 1]]
    const valid = emails.validMask(rows); // Uint8Array: 1 where the address is not null
    // The output is never longer than the input: write it straight into typed arrays.
    const out = new Uint8Array(bytes.length);
    const outOffsets = new Int32Array(rows + 1);
    const flags = new Uint8Array(rows);
    let len = 0;
    for (let i = 0; i < rows; i++) {
      if (valid[i]) {
        let start = offsets[i];
        let end = offsets[i + 1];
        while (start < end && SPACE[bytes[start]]) start++;
        while (end > start && SPACE[bytes[end - 1]]) end--;
        // Copy the trimmed address, lowercasing A-Z and noting the last `@`.
        const from = len;
        let at = -1;
        for (let k = start; k < end; k++) {
          let b = bytes[k];
          if (b >= 0x41 && b <= 0x5a) b |= 0x20;
          else if (b === 0x40) at = len;
          out[len++] = b;
        }
        if (at >= from && this.isFree(out, at + 1, len)) flags[i] = 1;
      }
      outOffsets[i + 1] = len;
    }
    // Both columns are null exactly where the input is.
    const normalized = new Column(this.column, DataType.utf8, out.subarray(0, len), {
      offsets: outOffsets,
      validity: emails.validity,
    });
    const flag = Column.boolean(this.flag, packBits(flags), emails.validity);
    return OutputBatch.allRows(rows, [normalized, flag]);
  }
}

export const transformer = exportPlugin(EmailNormalize);
