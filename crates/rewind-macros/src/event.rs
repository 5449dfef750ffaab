//! `#[derive(Event)]` and `#[rewind::event]`: a `rewind::Event` impl for an enum, and
//! for the attribute, variants stored under names given with `#[event(name = "...")]`.
//!
//! serde stays the one codec: a stored name is a `#[serde(rename)]`, which only an
//! attribute macro can add (a derive sees the item but cannot change it). Both check
//! what serde's derive would accept silently: a representation other than the
//! externally tagged one, and two variants stored under one name.

use crate::attr::{Key, unknown};
use proc_macro2::{TokenStream, TokenTree};
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, Data, DataEnum, DeriveInput, LitStr, Path, Variant};

pub(crate) fn derive(input: &DeriveInput) -> syn::Result<TokenStream> {
    let data = variants(input, "#[derive(Event)]")?;
    for variant in &data.variants {
        if let Some(attr) = variant.attrs.iter().find(|attr| attr.path().is_ident("event")) {
            return Err(syn::Error::new(
                attr.span(),
                "`#[event(name = ...)]` needs `#[rewind::event]` on the enum in place of `#[derive(Event)]`: \
                 a derive cannot rename serde's variants, the attribute can",
            ));
        }
    }
    check_names(input, data, |_| None)?;
    implementation(input)
}

pub(crate) fn attribute(args: TokenStream, mut input: DeriveInput) -> syn::Result<TokenStream> {
    match rename_variants(args, &mut input) {
        Ok(()) => {
            let implementation = implementation(&input)?;
            Ok(quote!(#input #implementation))
        }
        // Keep the item (without the attributes nothing else knows) and its impl, so
        // the one error shows rather than every use of the enum failing too.
        Err(error) => {
            strip_event_attrs(&mut input);
            let implementation = implementation(&input).unwrap_or_default();
            let error = error.into_compile_error();
            Ok(quote!(#input #implementation #error))
        }
    }
}

/// Turns each variant's `#[event(name = "x")]` into `#[serde(rename = "x")]`.
fn rename_variants(args: TokenStream, input: &mut DeriveInput) -> syn::Result<()> {
    if !args.is_empty() {
        return Err(syn::Error::new(
            args.span(),
            "`#[rewind::event]` takes no arguments; write `#[event(upcast = path)]` on the enum",
        ));
    }
    check_serde_derive_follows(input)?;
    let names = {
        let data = variants(input, "#[rewind::event]")?;
        let mut names = Vec::with_capacity(data.variants.len());
        for variant in &data.variants {
            names.push(variant_name(variant)?);
        }
        check_names(input, data, |index| names[index].as_ref().map(LitStr::value))?;
        names
    };
    let Data::Enum(data) = &mut input.data else { unreachable!("checked by `variants`") };
    for (variant, name) in data.variants.iter_mut().zip(names) {
        variant.attrs.retain(|attr| !attr.path().is_ident("event"));
        if let Some(name) = name {
            variant.attrs.push(syn::parse_quote!(#[serde(rename = #name)]));
        }
    }
    Ok(())
}

/// serde's derives must run after this attribute, or they would see the variants
/// without their names and store them under the Rust names, silently. Attributes
/// expand top to bottom, so a derive this attribute can see is one still to run.
fn check_serde_derive_follows(input: &DeriveInput) -> syn::Result<()> {
    let mut derived = Vec::new();
    for attr in input.attrs.iter().filter(|attr| attr.path().is_ident("derive")) {
        let paths = attr.parse_args_with(syn::punctuated::Punctuated::<Path, syn::Token![,]>::parse_terminated)?;
        derived.extend(paths.into_iter().filter_map(|path| Some(path.segments.last()?.ident.to_string())));
    }
    if ["Serialize", "Deserialize"].iter().all(|name| derived.iter().any(|derived| derived == name)) {
        return Ok(());
    }
    Err(syn::Error::new(
        proc_macro2::Span::call_site(),
        "`#[rewind::event]` goes above `#[derive(Serialize, Deserialize)]`, so that serde sees the stored names",
    ))
}

/// A variant's `#[event(name = "...")]`, refused beside a `#[serde(rename)]`.
fn variant_name(variant: &Variant) -> syn::Result<Option<LitStr>> {
    let mut name = Key::<LitStr>::new("name");
    for attr in variant.attrs.iter().filter(|attr| attr.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") { name.parse(&meta) } else { Err(unknown(&meta, "event", &["name"])) }
        })?;
    }
    if let Some(given) = &name.value
        && serde_keys(&variant.attrs).any(|key| key == "rename")
    {
        return Err(syn::Error::new(
            given.span(),
            "a variant's stored name is given once: `#[event(name)]` or `#[serde(rename)]`, not both",
        ));
    }
    Ok(name.value)
}

fn strip_event_attrs(input: &mut DeriveInput) {
    if let Data::Enum(data) = &mut input.data {
        for variant in &mut data.variants {
            variant.attrs.retain(|attr| !attr.path().is_ident("event"));
        }
    }
}

/// The impl itself, with the enum's `#[event(upcast = path)]` if any.
fn implementation(input: &DeriveInput) -> syn::Result<TokenStream> {
    let mut upcast = Key::<Path>::new("upcast");
    for attr in input.attrs.iter().filter(|attr| attr.path().is_ident("event")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("upcast") { upcast.parse(&meta) } else { Err(unknown(&meta, "event", &["upcast"])) }
        })?;
    }
    let upcast = upcast.value.map(|upcast| {
        quote! {
            fn upcast(
                event_type: &str,
                data: &str,
            ) -> ::core::option::Option<(::std::string::String, ::rewind::__private::serde_json::Value)> {
                #upcast(event_type, data)
            }
        }
    });
    let name = &input.ident;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::rewind::Event for #name #type_generics #where_clause {
            #upcast
        }
    })
}

/// The enum's variants; anything but an externally tagged enum is refused, since an
/// event's stored form is serde's tag (its type name) and the tag's content.
fn variants<'a>(input: &'a DeriveInput, macro_name: &str) -> syn::Result<&'a DataEnum> {
    let data = match &input.data {
        Data::Enum(data) => data,
        Data::Struct(data) => return Err(not_an_enum(data.struct_token.span, macro_name)),
        Data::Union(data) => return Err(not_an_enum(data.union_token.span, macro_name)),
    };
    for attr in input.attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
        if serde_keys(std::slice::from_ref(attr)).any(|key| key == "tag" || key == "untagged") {
            return Err(syn::Error::new(
                attr.span(),
                "events use serde's default, externally tagged representation: the tag is the stored type name",
            ));
        }
    }
    Ok(data)
}

/// Refuses two variants stored under one name (serde would decode both as the first).
/// `given(i)` is the name the attribute gives variant `i`; otherwise its serde name,
/// where the macro can tell it (not under `rename_all` or a split `rename(...)`).
fn check_names(input: &DeriveInput, data: &DataEnum, given: impl Fn(usize) -> Option<String>) -> syn::Result<()> {
    let rename_all = serde_keys(&input.attrs).any(|key| key == "rename_all");
    let mut seen: Vec<(String, &Variant)> = Vec::new();
    for (index, variant) in data.variants.iter().enumerate() {
        let name = given(index).or_else(|| serde_name(variant, rename_all));
        let Some(name) = name else { continue };
        if let Some((_, first)) = seen.iter().find(|(seen, _)| *seen == name) {
            return Err(syn::Error::new(
                variant.ident.span(),
                format!("`{}` and `{}` are both stored as `{name}`", first.ident, variant.ident),
            ));
        }
        seen.push((name, variant));
    }
    Ok(())
}

/// A variant's serde name when it is plain: `#[serde(rename = "x")]` or its identifier.
fn serde_name(variant: &Variant, rename_all: bool) -> Option<String> {
    for attr in variant.attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
        let Ok(list) = attr.meta.require_list() else { continue };
        let tokens: Vec<TokenTree> = list.tokens.clone().into_iter().collect();
        for window in tokens.windows(3) {
            if let [TokenTree::Ident(key), TokenTree::Punct(eq), TokenTree::Literal(value)] = window
                && key == "rename"
                && eq.as_char() == '='
            {
                return syn::parse2::<LitStr>(value.to_token_stream()).ok().map(|name| name.value());
            }
        }
        if serde_keys(std::slice::from_ref(attr)).any(|key| key == "rename") {
            return None; // `rename(serialize = .., deserialize = ..)`
        }
    }
    (!rename_all).then(|| variant.ident.unraw().to_string())
}

/// The top-level keys of `#[serde(...)]` attributes (`rename`, `tag`, `default`, ...).
fn serde_keys(attrs: &[Attribute]) -> impl Iterator<Item = String> + '_ {
    attrs.iter().filter(|attr| attr.path().is_ident("serde")).flat_map(|attr| {
        let tokens = attr.meta.require_list().map(|list| list.tokens.clone()).unwrap_or_default();
        let mut keys = Vec::new();
        let mut at_key = true;
        for token in tokens {
            match token {
                TokenTree::Ident(ident) if at_key => {
                    keys.push(ident.to_string());
                    at_key = false;
                }
                TokenTree::Punct(punct) if punct.as_char() == ',' => at_key = true,
                _ => {}
            }
        }
        keys
    })
}

fn not_an_enum(span: proc_macro2::Span, macro_name: &str) -> syn::Error {
    syn::Error::new(span, format!("`{macro_name}` is for enums: each variant is one type of event"))
}
