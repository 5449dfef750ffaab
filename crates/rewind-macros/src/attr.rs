//! The `key = value` lists inside `#[command(...)]` and `#[event(...)]`: each key at
//! most once, an unknown key an error on that key, naming the keys there are.

use syn::meta::ParseNestedMeta;

/// One optional key, remembering whether it was given already.
pub(crate) struct Key<T> {
    pub(crate) name: &'static str,
    pub(crate) value: Option<T>,
}

impl<T> Key<T> {
    pub(crate) fn new(name: &'static str) -> Self {
        Key { name, value: None }
    }

    /// Parses `= value` for this key, refusing a second occurrence.
    pub(crate) fn parse(&mut self, meta: &ParseNestedMeta<'_>) -> syn::Result<()>
    where
        T: syn::parse::Parse,
    {
        if self.value.is_some() {
            return Err(meta.error(format_args!("`{}` is given twice", self.name)));
        }
        self.value = Some(meta.value()?.parse()?);
        Ok(())
    }
}

/// The error for a key that is not one of `known`.
pub(crate) fn unknown(meta: &ParseNestedMeta<'_>, attribute: &str, known: &[&str]) -> syn::Error {
    let key = meta.path.get_ident().map_or_else(|| "this".to_owned(), |ident| format!("`{ident}`"));
    let known: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
    meta.error(format_args!("{key} is not a key of `#[{attribute}(...)]`; the keys are {}", known.join(", ")))
}
