//! The model's chat template (Jinja), rendered with minijinja the way transformers'
//! `apply_chat_template` renders it with Jinja2.
//!
//! Same environment as transformers: `trim_blocks` and `lstrip_blocks` on, Python string/dict/list methods
//! (`.strip()`, `.startswith()`, `.items()`...) from minijinja-contrib's pycompat, a `raise_exception`
//! function, and a `tojson` filter that writes JSON as Python's `json.dumps(ensure_ascii=False)` does.
//! The context holds `messages`, `add_generation_prompt`, `bos_token` and `eos_token`.
use minijinja::value::ValueKind;
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::Value as Json;

use crate::llm::ChatMessage;

/// Why a chat template could not be compiled or rendered.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    /// The template does not parse.
    #[error("the chat template of {source_name} does not compile: {message}")]
    Compile {
        /// The model file the template came from.
        source_name: String,
        /// minijinja's message, with the template line.
        message: String,
    },
    /// Rendering failed (including `raise_exception` called by the template).
    #[error("the chat template failed on these messages: {0}")]
    Render(String),
    /// The model has no chat template.
    #[error("the model {0} has no chat template; use a text prompt")]
    Missing(String),
}

/// A compiled chat template with the model's special tokens.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

const NAME: &str = "chat_template";

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)` of a template value, keys in insertion
/// order: `", "` and `": "` separators without an indent, `","` with one.
fn py_json(v: &Value, indent: Option<usize>, depth: usize, out: &mut String) -> Result<(), Error> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    let (open, close, is_map) = match v.kind() {
        ValueKind::Map => ('{', '}', true),
        ValueKind::Seq | ValueKind::Iterable => ('[', ']', false),
        ValueKind::Undefined | ValueKind::None => {
            out.push_str("null");
            return Ok(());
        }
        ValueKind::String => {
            out.push_str(&Json::String(v.to_string()).to_string());
            return Ok(());
        }
        _ => {
            let json = serde_json::to_value(v).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
            out.push_str(&json.to_string());
            return Ok(());
        }
    };
    out.push(open);
    let mut empty = true;
    for (i, item) in v.try_iter()?.enumerate() {
        empty = false;
        out.push_str(if i > 0 { sep } else { "" });
        newline(out, depth + 1);
        if is_map {
            out.push_str(&Json::String(item.to_string()).to_string());
            out.push_str(": ");
            py_json(&v.get_item(&item)?, indent, depth + 1, out)?;
        } else {
            py_json(&item, indent, depth + 1, out)?;
        }
    }
    if !empty {
        newline(out, depth);
    }
    out.push(close);
    Ok(())
}

fn tojson(value: Value, indent: Option<usize>) -> Result<Value, Error> {
    let mut out = String::new();
    py_json(&value, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

impl ChatTemplate {
    /// Compiles `source`; `source_name` (the model file) appears in errors.
    pub fn new(source: &str, source_name: &str, bos_token: &str, eos_token: &str) -> Result<Self, ChatTemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned(NAME, source.to_string()).map_err(|e| ChatTemplateError::Compile {
            source_name: source_name.to_string(),
            message: format!("{e:#}"),
        })?;
        Ok(Self { env, source: source.to_string(), bos_token: bos_token.to_string(), eos_token: eos_token.to_string() })
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`, ending with the assistant's turn header when `add_generation_prompt`.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, ChatTemplateError> {
        let template =
            self.env.get_template(NAME).expect("the chat template was added at construction. This is a bug.");
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        };
        template.render(ctx).map_err(|e| ChatTemplateError::Render(format!("{e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into() }
    }

    #[test]
    fn python_string_methods_and_loop_work_in_templates() {
        let src = "{% for m in messages %}{{ m['role'].upper() }}:{{ m.content.strip() }}\n{% endfor %}\
                   {% if add_generation_prompt %}A:{% endif %}";
        let t = ChatTemplate::new(src, "test", "<s>", "</s>").unwrap();
        assert_eq!(t.render(&[msg("user", "  hi ")], true).unwrap(), "USER:hi\nA:");
    }

    #[test]
    fn raise_exception_becomes_a_render_error() {
        let t = ChatTemplate::new("{{ raise_exception('no system role') }}", "test", "", "").unwrap();
        let err = t.render(&[], false).unwrap_err().to_string();
        assert!(err.contains("no system role"), "{err}");
    }

    #[test]
    fn tojson_uses_python_separators_and_keeps_non_ascii() {
        let t = ChatTemplate::new("{{ messages[0] | tojson }}", "test", "", "").unwrap();
        assert_eq!(t.render(&[msg("user", "é<")], false).unwrap(), r#"{"role": "user", "content": "é<"}"#);
    }

    #[test]
    fn syntax_error_names_the_source() {
        let err = ChatTemplate::new("{% if %}", "model.gguf", "", "").unwrap_err().to_string();
        assert!(err.contains("model.gguf"), "{err}");
    }
}
