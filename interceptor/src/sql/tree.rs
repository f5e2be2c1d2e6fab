//! A name-preserving generic view of pg_query's protobuf AST, built through `serde::Serialize`.
//!
//! pg_query's protobuf structs all derive `Serialize`. Serializing into [`Tree`] keeps every
//! message's *type name* (`"RangeVar"`, `"FuncCall"`, …) and every field name, whether the
//! message sits behind the generic `Node` wrapper or in a typed field (`InsertStmt.relation`,
//! `SelectStmt.larg`). The walker then visits every node of every statement without a
//! hand-written traversal that would silently miss node types added by a newer PostgreSQL.
//! `Node { node: Some(X) }` wrappers are collapsed into `X`.

use serde::ser::{self, Serialize};

/// One value of the AST.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tree {
    /// A protobuf message: its type name and its fields in declaration order.
    Msg(&'static str, Vec<(&'static str, Tree)>),
    List(Vec<Tree>),
    Str(String),
    Int(i64),
    Bool(bool),
    Null,
}

impl Tree {
    /// The field `name` of a message, if present and not null.
    pub(crate) fn field(&self, name: &str) -> Option<&Tree> {
        match self {
            Tree::Msg(_, fields) => fields
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v)
                .filter(|v| !matches!(v, Tree::Null)),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Tree::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn items(&self) -> &[Tree] {
        match self {
            Tree::List(items) => items,
            _ => &[],
        }
    }
}

/// Serializes any pg_query protobuf value into a [`Tree`].
pub(crate) fn to_tree<T: Serialize + ?Sized>(value: &T) -> Tree {
    // The serializer below never fails: every serde data model case maps to some Tree.
    value.serialize(TreeSer).unwrap_or(Tree::Null)
}

/// The type name of a `NodeEnum` variant (`"SelectStmt"`), without serializing its payload.
pub(crate) fn variant_name(node: &pg_query::NodeEnum) -> &'static str {
    match node.serialize(NameOnly) {
        Ok(name) | Err(NameErr(name)) => name,
    }
}

#[derive(Debug)]
pub(crate) struct NameErr(&'static str);

impl std::fmt::Display for NameErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for NameErr {}
impl ser::Error for NameErr {
    fn custom<T: std::fmt::Display>(_msg: T) -> Self {
        NameErr("?")
    }
}

/// Serializer that only records the variant name of a newtype enum variant.
struct NameOnly;

macro_rules! name_only_unsupported {
    ($($f:ident($($t:ty),*) -> $r:ty;)*) => {
        $(fn $f(self, $(_: $t),*) -> Result<$r, NameErr> { Err(NameErr("?")) })*
    };
}

impl ser::Serializer for NameOnly {
    type Ok = &'static str;
    type Error = NameErr;
    type SerializeSeq = ser::Impossible<&'static str, NameErr>;
    type SerializeTuple = ser::Impossible<&'static str, NameErr>;
    type SerializeTupleStruct = ser::Impossible<&'static str, NameErr>;
    type SerializeTupleVariant = ser::Impossible<&'static str, NameErr>;
    type SerializeMap = ser::Impossible<&'static str, NameErr>;
    type SerializeStruct = ser::Impossible<&'static str, NameErr>;
    type SerializeStructVariant = ser::Impossible<&'static str, NameErr>;

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _value: &T,
    ) -> Result<&'static str, NameErr> {
        Ok(variant)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<&'static str, NameErr> {
        Ok(variant)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _v: &T) -> Result<&'static str, NameErr> {
        Err(NameErr("?"))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _v: &T,
    ) -> Result<&'static str, NameErr> {
        Err(NameErr("?"))
    }
    name_only_unsupported! {
        serialize_bool(bool) -> &'static str;
        serialize_i8(i8) -> &'static str;
        serialize_i16(i16) -> &'static str;
        serialize_i32(i32) -> &'static str;
        serialize_i64(i64) -> &'static str;
        serialize_u8(u8) -> &'static str;
        serialize_u16(u16) -> &'static str;
        serialize_u32(u32) -> &'static str;
        serialize_u64(u64) -> &'static str;
        serialize_f32(f32) -> &'static str;
        serialize_f64(f64) -> &'static str;
        serialize_char(char) -> &'static str;
        serialize_str(&str) -> &'static str;
        serialize_bytes(&[u8]) -> &'static str;
        serialize_none() -> &'static str;
        serialize_unit() -> &'static str;
        serialize_unit_struct(&'static str) -> &'static str;
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct(&'static str, usize) -> Self::SerializeStruct;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }
}

/// Never produced: [`TreeSer`] is infallible, but serde needs an error type.
#[derive(Debug)]
pub(crate) struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tree serialization error")
    }
}
impl std::error::Error for Never {}
impl ser::Error for Never {
    fn custom<T: std::fmt::Display>(_msg: T) -> Self {
        Never
    }
}

struct TreeSer;

/// Collects a sequence, tuple or struct.
pub(crate) struct Collect {
    name: &'static str,
    items: Vec<Tree>,
    fields: Vec<(&'static str, Tree)>,
}

impl Collect {
    fn new(name: &'static str, len: usize) -> Self {
        Collect {
            name,
            items: Vec::with_capacity(len),
            fields: Vec::with_capacity(len),
        }
    }

    fn finish_struct(self) -> Tree {
        // Collapse the generic wrapper `Node { node: X }` into X.
        if self.name == "Node" && self.fields.len() == 1 && self.fields[0].0 == "node" {
            return self
                .fields
                .into_iter()
                .next()
                .map(|(_, v)| v)
                .unwrap_or(Tree::Null);
        }
        Tree::Msg(self.name, self.fields)
    }
}

impl ser::SerializeSeq for Collect {
    type Ok = Tree;
    type Error = Never;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Never> {
        self.items.push(to_tree(v));
        Ok(())
    }
    fn end(self) -> Result<Tree, Never> {
        Ok(Tree::List(self.items))
    }
}

impl ser::SerializeTuple for Collect {
    type Ok = Tree;
    type Error = Never;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Never> {
        self.items.push(to_tree(v));
        Ok(())
    }
    fn end(self) -> Result<Tree, Never> {
        Ok(Tree::List(self.items))
    }
}

impl ser::SerializeTupleStruct for Collect {
    type Ok = Tree;
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Never> {
        self.items.push(to_tree(v));
        Ok(())
    }
    fn end(self) -> Result<Tree, Never> {
        Ok(Tree::List(self.items))
    }
}

impl ser::SerializeTupleVariant for Collect {
    type Ok = Tree;
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Never> {
        self.items.push(to_tree(v));
        Ok(())
    }
    fn end(self) -> Result<Tree, Never> {
        Ok(Tree::Msg(
            self.name,
            vec![("items", Tree::List(self.items))],
        ))
    }
}

impl ser::SerializeMap for Collect {
    type Ok = Tree;
    type Error = Never;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Never> {
        self.items.push(to_tree(k));
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Never> {
        self.items.push(to_tree(v));
        Ok(())
    }
    fn end(self) -> Result<Tree, Never> {
        // pg_query's protobuf has no maps; keep keys and values so nothing is lost.
        Ok(Tree::List(self.items))
    }
}

impl ser::SerializeStruct for Collect {
    type Ok = Tree;
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Never> {
        self.fields.push((key, to_tree(v)));
        Ok(())
    }
    fn end(self) -> Result<Tree, Never> {
        Ok(self.finish_struct())
    }
}

impl ser::SerializeStructVariant for Collect {
    type Ok = Tree;
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Never> {
        self.fields.push((key, to_tree(v)));
        Ok(())
    }
    fn end(self) -> Result<Tree, Never> {
        Ok(Tree::Msg(self.name, self.fields))
    }
}

impl ser::Serializer for TreeSer {
    type Ok = Tree;
    type Error = Never;
    type SerializeSeq = Collect;
    type SerializeTuple = Collect;
    type SerializeTupleStruct = Collect;
    type SerializeTupleVariant = Collect;
    type SerializeMap = Collect;
    type SerializeStruct = Collect;
    type SerializeStructVariant = Collect;

    fn serialize_bool(self, v: bool) -> Result<Tree, Never> {
        Ok(Tree::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Tree, Never> {
        Ok(Tree::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<Tree, Never> {
        Ok(Tree::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Tree, Never> {
        Ok(Tree::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Tree, Never> {
        Ok(Tree::Int(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Tree, Never> {
        Ok(Tree::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<Tree, Never> {
        Ok(Tree::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Tree, Never> {
        Ok(Tree::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Tree, Never> {
        Ok(Tree::Int(i64::try_from(v).unwrap_or(i64::MAX)))
    }
    fn serialize_f32(self, _v: f32) -> Result<Tree, Never> {
        Ok(Tree::Null)
    }
    fn serialize_f64(self, _v: f64) -> Result<Tree, Never> {
        Ok(Tree::Null)
    }
    fn serialize_char(self, v: char) -> Result<Tree, Never> {
        Ok(Tree::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Tree, Never> {
        Ok(Tree::Str(v.to_owned()))
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<Tree, Never> {
        Ok(Tree::Null)
    }
    fn serialize_none(self) -> Result<Tree, Never> {
        Ok(Tree::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<Tree, Never> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<Tree, Never> {
        Ok(Tree::Null)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Tree, Never> {
        Ok(Tree::Null)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Tree, Never> {
        Ok(Tree::Str(variant.to_owned()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        v: &T,
    ) -> Result<Tree, Never> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<Tree, Never> {
        // `node::Node::RangeVar(RangeVar)` and `a_const::Val::Sval(String)`: the payload is a
        // message whose own struct name is kept; anything else is labelled by the variant.
        match to_tree(v) {
            msg @ Tree::Msg(..) => Ok(msg),
            other => Ok(Tree::Msg(variant, vec![("value", other)])),
        }
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Collect, Never> {
        Ok(Collect::new("", len.unwrap_or(0)))
    }
    fn serialize_tuple(self, len: usize) -> Result<Collect, Never> {
        Ok(Collect::new("", len))
    }
    fn serialize_tuple_struct(self, name: &'static str, len: usize) -> Result<Collect, Never> {
        Ok(Collect::new(name, len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Collect, Never> {
        Ok(Collect::new(variant, len))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Collect, Never> {
        Ok(Collect::new("", len.unwrap_or(0)))
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Collect, Never> {
        Ok(Collect::new(name, len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Collect, Never> {
        Ok(Collect::new(variant, len))
    }
}
