// Text <-> token ids in the page, as the Python tokenizer (webgpu_llm.tokenizer) does it:
// special tokens are split off first, llama.cpp's way (longest first; control tokens only
// when parse_special), the pieces between go through the vocabulary's BPE model
// (tokenizer.json, read by @huggingface/tokenizers), BOS is prepended where the model adds
// it; chat prompts are rendered with the model's template by @huggingface/jinja.

import { Tokenizer } from "./vendor/tokenizers.mjs";
import { Template } from "./vendor/jinja.mjs";

const ASCII_SPACE = " \t\n\v\f\r";

function lstripAscii(s) {
  let i = 0;
  while (i < s.length && ASCII_SPACE.includes(s[i])) i++;
  return s.slice(i);
}

function rstripAscii(s) {
  let i = s.length;
  while (i > 0 && ASCII_SPACE.includes(s[i - 1])) i--;
  return s.slice(0, i);
}

export class WebTokenizer {
  /** `info`: the plan's "tokenizer" section; `json`: the parsed tokenizer.json. */
  constructor(info, json) {
    this.info = info;
    this.model = new Tokenizer(json, {});
    this.hidden = new Set(info.hidden_ids);
    this.stopIds = new Set(info.stop_ids);
    this.specials = info.specials; // longest first, as the plan lists them
    this.template = info.chat_template ? new Template(info.chat_template) : null;
  }

  static async load(info, base) {
    const res = await fetch(new URL(info.file, base));
    if (!res.ok) throw new Error(`${info.file}: HTTP ${res.status}; the export is incomplete`);
    return new WebTokenizer(info, await res.json());
  }

  /** The text cut at special tokens: strings and ids. */
  split(text, parseSpecial = true) {
    let pieces = text ? [text] : [];
    for (const tok of this.specials) {
      if (tok.control && !parseSpecial) continue;
      if (!text.includes(tok.text)) continue;
      const out = [];
      for (const piece of pieces) {
        if (typeof piece === "number" || !piece.includes(tok.text)) {
          out.push(piece);
          continue;
        }
        const parts = piece.split(tok.text);
        parts.forEach((part, i) => {
          if (i > 0) {
            out.push(tok.id);
            if (tok.rstrip) part = lstripAscii(part);
          }
          if (i < parts.length - 1 && tok.lstrip) part = rstripAscii(part);
          if (part) out.push(part);
        });
      }
      pieces = out;
    }
    return pieces;
  }

  /** Token ids of `text`; BOS first when addBos (default: the model's). */
  encode(text, { addBos = null, parseSpecial = true } = {}) {
    const ids = [];
    if (this.info.kind === "hf") {
      ids.push(...this.model.encode(text, { add_special_tokens: false }).ids);
    } else {
      let afterSpecial = true;
      for (let piece of this.split(text, parseSpecial)) {
        if (typeof piece === "number") {
          ids.push(piece);
          afterSpecial = true;
          continue;
        }
        if (this.info.sentencepiece) {
          if (this.info.space_prefix && afterSpecial) piece = " " + piece;
          piece = piece.replaceAll(" ", "\u2581");
        }
        ids.push(...this.model.encode(piece, { add_special_tokens: false }).ids);
        afterSpecial = false;
      }
    }
    if (addBos ?? this.info.add_bos) ids.unshift(this.info.bos_id);
    return ids;
  }

  /** Text of `ids`, hidden special tokens left out. */
  decode(ids) {
    const shown = ids.filter((i) => !this.hidden.has(i));
    let text = this.model.decode(shown, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    if (this.info.strip_first_space && text.startsWith(" ")) text = text.slice(1);
    return text;
  }

  get hasChatTemplate() {
    return this.template !== null;
  }

  /** The chat prompt's text, as transformers' apply_chat_template(tokenize=False). */
  applyChatTemplate(messages, addGenerationPrompt = true) {
    if (!this.template) throw new Error("this model has no chat template");
    let text = this.template.render({
      messages, add_generation_prompt: addGenerationPrompt, ...this.info.special_texts,
    });
    const bos = this.info.special_texts.bos_token;
    if (this.info.add_bos && bos && text.startsWith(bos)) text = text.slice(bos.length);
    return text;
  }

  /** Ids of a chat turn (the API's prompt_ids): the template's text, one BOS where the model adds it. */
  chatIds(messages) {
    const text = this.applyChatTemplate(messages, true);
    const bos = this.info.bos_text;
    const startsWithBos = Boolean(bos) && text.startsWith(bos);
    return this.encode(text, { addBos: this.info.add_bos && !startsWithBos });
  }
}
