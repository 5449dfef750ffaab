//! `#[derive(Command)]`: a `rewind::Command` impl from `#[command(aggregate, id,
//! prefix, validate)]`. The aggregate's `Execute` bound is left to the trait, so a
//! command its aggregate cannot execute fails to compile exactly as a hand-written
//! impl does, with the error on the `aggregate = ...` type.

use crate::attr::{Key, unknown};
use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, LitStr, Member, Path, Type};

const KEYS: &[&str] = &["aggregate", "id", "prefix", "validate"];

/// What `#[command(...)]` said.
struct Settings {
    aggregate: Key<Type>,
    id: Key<Member>,
    prefix: Key<LitStr>,
    validate: Key<Path>,
}

pub(crate) fn derive(input: &DeriveInput) -> syn::Result<TokenStream> {
    let fields = match &input.data {
        Data::Struct(data) => &data.fields,
        Data::Enum(data) => return Err(not_a_struct(data.enum_token.span)),
        Data::Union(data) => return Err(not_a_struct(data.union_token.span)),
    };
    let settings = settings(input)?;
    let aggregate = settings.aggregate.value.ok_or_else(|| missing(input, "aggregate = Type"))?;
    let id = settings.id.value.ok_or_else(|| missing(input, "id = field"))?;
    check_field(fields, &id, &input.ident)?;

    let name = &input.ident;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    // Spanned so that an aggregate without `Execute<Self>` is reported on its name.
    let aggregate = quote_spanned!(aggregate.span()=> type Aggregate = #aggregate;);
    let prefix = settings.prefix.value.map(|prefix| {
        quote!(const STREAM_PREFIX: ::core::option::Option<&'static str> = ::core::option::Option::Some(#prefix);)
    });
    let validate = settings.validate.value.map(|check| {
        quote_spanned! {check.span()=>
            fn validate(&self) -> ::core::result::Result<(), ::rewind::ValidationErrors> {
                #check(self)
            }
        }
    });
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::rewind::Command for #name #type_generics #where_clause {
            #aggregate
            #prefix
            fn aggregate_id(&self) -> ::std::string::String {
                ::std::string::ToString::to_string(&self.#id)
            }
            #validate
        }
    })
}

fn settings(input: &DeriveInput) -> syn::Result<Settings> {
    let mut settings = Settings {
        aggregate: Key::new("aggregate"),
        id: Key::new("id"),
        prefix: Key::new("prefix"),
        validate: Key::new("validate"),
    };
    for attr in input.attrs.iter().filter(|attr| attr.path().is_ident("command")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("aggregate") {
                settings.aggregate.parse(&meta)
            } else if meta.path.is_ident("id") {
                settings.id.parse(&meta)
            } else if meta.path.is_ident("prefix") {
                settings.prefix.parse(&meta)
            } else if meta.path.is_ident("validate") {
                settings.validate.parse(&meta)
            } else {
                Err(unknown(&meta, "command", KEYS))
            }
        })?;
    }
    Ok(settings)
}

/// The `id` field must exist, so the error names it rather than the generated code.
fn check_field(fields: &Fields, id: &Member, command: &syn::Ident) -> syn::Result<()> {
    let exists = match id {
        Member::Named(name) => fields.iter().any(|field| field.ident.as_ref() == Some(name)),
        Member::Unnamed(index) => (index.index as usize) < fields.len(),
    };
    if exists {
        return Ok(());
    }
    let shown = match id {
        Member::Named(name) => name.to_string(),
        Member::Unnamed(index) => index.index.to_string(),
    };
    Err(syn::Error::new(id.span(), format!("`{command}` has no field `{shown}` to take the aggregate id from")))
}

fn missing(input: &DeriveInput, key: &str) -> syn::Error {
    let attr = input.attrs.iter().find(|attr| attr.path().is_ident("command"));
    let span = attr
        .and_then(|attr| attr.meta.require_list().ok())
        .map_or_else(|| input.ident.span(), |list| list.delimiter.span().join());
    syn::Error::new(span, format!("`#[derive(Command)]` needs `#[command({key})]`"))
}

fn not_a_struct(span: proc_macro2::Span) -> syn::Error {
    syn::Error::new(span, "`#[derive(Command)]` is for structs: a command is one request with its fields")
}
