//! The `shop` command line: one command per run against a database URL, and
//! `--mine` to add the removed-products miner and wait for it to catch up.
//!
//! ```text
//! shop --database sqlite://shop.db add --order O --user U --item-id I --name Tea --price 350
//! shop --database sqlite://shop.db --mine removed --user U
//! ```

use clap::{Parser, Subcommand};
use rewind_backend::Database;
use shop::basket::Basket;
use shop::order::{AddProduct, CheckOut, Item, RemoveProduct};
use shop::{Mining, Shop};
use std::io::Write;
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "shop", about = "Rewind's shop example: baskets, and mining the products users removed")]
struct Cli {
    /// sqlite://PATH, postgres://USER@HOST/DB[?schema=NAME] or memory://.
    #[arg(long, env = "SHOP_DATABASE", default_value = "sqlite://shop.db")]
    database: Database,
    /// Register the removed-products miner and wait until it has caught up first
    /// (`removed` always does).
    #[arg(long)]
    mine: bool,
    #[command(subcommand)]
    command: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Put one unit of a product in an order's basket.
    Add {
        #[arg(long)]
        order: Uuid,
        #[arg(long)]
        user: Uuid,
        #[arg(long)]
        item_id: Uuid,
        #[arg(long)]
        name: String,
        /// Unit price in cents (a negative one is let through, for the order to refuse).
        #[arg(long, allow_hyphen_values = true)]
        price: i64,
    },
    /// Take one unit of a product out.
    Remove {
        #[arg(long)]
        order: Uuid,
        #[arg(long)]
        user: Uuid,
        #[arg(long)]
        item_id: Uuid,
    },
    /// Check an order out.
    Checkout {
        #[arg(long)]
        order: Uuid,
        #[arg(long)]
        user: Uuid,
    },
    /// Show an order's basket.
    Basket {
        #[arg(long)]
        order: Uuid,
    },
    /// Show the products a user removed, mining the history first.
    Removed {
        #[arg(long)]
        user: Uuid,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mine = cli.mine || matches!(cli.command, Action::Removed { .. });
    match start(&cli.database, mine).await {
        Ok(shop) => {
            let result = run(&shop, cli.command).await;
            shop.shutdown().await;
            exit(result)
        }
        Err(error) => exit(Err(error)),
    }
}

/// The error's message, not its debug form, and a failing exit code.
fn exit(result: Result<(), Box<dyn std::error::Error>>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shop: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Opens the shop; with `mine`, registers the miner and waits for it, printing progress.
async fn start(database: &Database, mine: bool) -> Result<Shop, Box<dyn std::error::Error>> {
    let shop = Shop::start(database, if mine { Mining::On } else { Mining::Off }).await?;
    if mine {
        let done = shop.catch_up_miner(|p| eprint!("\rmining: {}/{}", p.position, p.target)).await?;
        eprintln!("\rmining: caught up at position {}", done.target);
    }
    Ok(shop)
}

async fn run(shop: &Shop, action: Action) -> Result<(), Box<dyn std::error::Error>> {
    let order = match action {
        Action::Add { order, user, item_id, name, price } => {
            let item = Item { id: item_id, name, price_in_cents: price };
            shop.send(AddProduct { order_id: order, user_id: user, item }).await?;
            order
        }
        Action::Remove { order, user, item_id } => {
            shop.send(RemoveProduct { order_id: order, user_id: user, item_id }).await?;
            order
        }
        Action::Checkout { order, user } => {
            shop.send(CheckOut { order_id: order, user_id: user }).await?;
            order
        }
        Action::Basket { order } => order,
        Action::Removed { user } => {
            for p in shop.removed_by(user).await? {
                println!(
                    "{}  {:<20} {:>8} cents  removed {}x, last {}",
                    p.item_id, p.name, p.price_in_cents, p.times_removed, p.last_removed_at
                );
            }
            return Ok(());
        }
    };
    match shop.basket(order).await? {
        Some(basket) => print_basket(&basket)?,
        None => println!("order {order}: empty"),
    }
    Ok(())
}

fn print_basket(basket: &Basket) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let state = if basket.checked_out { "checked out" } else { "open" };
    writeln!(out, "order {} of user {} ({state})", basket.order_id, basket.user_id)?;
    for line in &basket.lines {
        writeln!(out, "  {} x {:<20} {:>8} cents  ({})", line.quantity, line.name, line.price_in_cents, line.item_id)?;
    }
    match basket.total_in_cents() {
        Some(total) => writeln!(out, "  total {total} cents"),
        None => writeln!(out, "  total beyond i64 cents"),
    }
}
