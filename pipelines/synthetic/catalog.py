"""Static reference data: categories, menus, countries and name pools.

Everything here is plain data so that the simulation stays readable and the
numbers (prices, opening hours, payment mixes) can be tuned in one place.
Prices are in EUR and converted per country with ``Country.price_factor``.
"""

from __future__ import annotations

from dataclasses import dataclass

CATEGORIES: tuple[str, ...] = (
    "cafe",
    "restaurant",
    "bar",
    "bakery",
    "retail",
    "beauty",
    "services",
    "food_truck",
)

FOOD_CATEGORIES = frozenset({"cafe", "restaurant", "bar", "bakery", "food_truck"})


@dataclass(frozen=True)
class CatalogItem:
    """One menu or catalogue line before it is priced for a merchant."""

    name: str
    category: str
    price_eur: float
    description: str | None = None


@dataclass(frozen=True)
class CategoryProfile:
    """Demand shape of a merchant category."""

    # Typical successful payments per day for one location (low, high).
    volume: tuple[int, int]
    # Monday..Sunday multipliers; 0 means closed.
    weekday: tuple[float, float, float, float, float, float, float]
    # Local hour 0..23 weights; 0 means closed in that hour.
    hours: tuple[float, ...]
    # Weights for the number of distinct lines in a basket (1, 2, 3, ...).
    basket_lines: tuple[float, ...]
    # Probability that a card-like payment carries a tip, before country culture.
    tip_rate: float
    # Share of successful payments refunded on a normal day.
    refund_rate: float
    items: tuple[CatalogItem, ...]
    seasonal: CatalogItem
    supplies: tuple[tuple[str, float], ...]
    noun: dict[str, str]


def _h(spec: dict[int, float]) -> tuple[float, ...]:
    return tuple(spec.get(h, 0.0) for h in range(24))


CATEGORY_PROFILES: dict[str, CategoryProfile] = {
    "cafe": CategoryProfile(
        volume=(160, 420),
        weekday=(1.0, 0.98, 1.0, 1.04, 1.1, 1.22, 0.92),
        hours=_h({7: 6, 8: 10, 9: 9, 10: 7, 11: 6, 12: 7, 13: 6, 14: 5, 15: 5, 16: 4, 17: 2}),
        basket_lines=(0.55, 0.3, 0.12, 0.03),
        tip_rate=0.35,
        refund_rate=0.006,
        items=(
            CatalogItem("Espresso", "Coffee", 2.40, "Single shot of our house blend"),
            CatalogItem("Double Espresso", "Coffee", 3.20),
            CatalogItem("Americano", "Coffee", 3.00, "Espresso topped with hot water"),
            CatalogItem("Flat White", "Coffee", 3.80, "Double ristretto with velvety steamed milk"),
            CatalogItem("Cappuccino", "Coffee", 3.60),
            CatalogItem("Latte", "Coffee", 3.90),
            CatalogItem("Oat Latte", "Coffee", 4.30, "Latte made with oat milk"),
            CatalogItem("Chai Latte", "Tea", 4.10, "Spiced black tea with steamed milk"),
            CatalogItem("Matcha Latte", "Tea", 4.50),
            CatalogItem("Hot Chocolate", "Drinks", 3.70),
            CatalogItem("Iced Latte", "Coffee", 4.20),
            CatalogItem("Croissant", "Pastry", 2.60, "All-butter croissant baked every morning"),
            CatalogItem("Pain au Chocolat", "Pastry", 2.90),
            CatalogItem("Almond Croissant", "Pastry", 3.40),
            CatalogItem("Banana Bread", "Pastry", 3.20, "Homemade, with walnuts"),
            CatalogItem("Blueberry Muffin", "Pastry", 3.10),
            CatalogItem("Avocado Toast", "Food", 8.50, "Sourdough, smashed avocado, chilli flakes"),
            CatalogItem("Ham and Cheese Toastie", "Food", 6.90),
            CatalogItem("Granola Bowl", "Food", 6.50, "Yoghurt, granola and seasonal fruit"),
            CatalogItem("Bottled Water", "Drinks", 1.80),
            CatalogItem("Coffee Beans 250g", "Retail", 12.00, "Our espresso blend, whole beans"),
        ),
        seasonal=CatalogItem("Pumpkin Spice Latte", "Coffee", 4.60, "Seasonal special"),
        supplies=(
            ("Coffee beans 5 kg", 92.0),
            ("Whole milk 1 L", 1.1),
            ("Oat milk 1 L", 1.8),
            ("Paper cups 12oz x1000", 64.0),
            ("Croissants (frozen) x50", 31.0),
        ),
        noun={"en": "coffee", "de": "Kaffee", "fr": "café", "es": "café", "ja": "コーヒー"},
    ),
    "restaurant": CategoryProfile(
        volume=(80, 240),
        weekday=(0.62, 0.75, 0.85, 1.0, 1.35, 1.5, 1.05),
        hours=_h({11: 3, 12: 9, 13: 8, 14: 4, 15: 1, 17: 3, 18: 7, 19: 10, 20: 9, 21: 6, 22: 2}),
        basket_lines=(0.12, 0.3, 0.28, 0.18, 0.08, 0.04),
        tip_rate=0.6,
        refund_rate=0.006,
        items=(
            CatalogItem("Soup of the Day", "Starters", 6.50),
            CatalogItem("Bruschetta", "Starters", 7.00, "Grilled bread, tomato, basil, garlic"),
            CatalogItem("Caesar Salad", "Starters", 11.50),
            CatalogItem("Burrata", "Starters", 12.00, "With heirloom tomatoes and olive oil"),
            CatalogItem("Margherita Pizza", "Mains", 11.00, "San Marzano tomato, fior di latte"),
            CatalogItem("Spaghetti Carbonara", "Mains", 13.50),
            CatalogItem("Grilled Salmon", "Mains", 21.00, "With lemon butter and greens"),
            CatalogItem("Ribeye Steak", "Mains", 29.00, "300 g, dry aged, with fries"),
            CatalogItem("Mushroom Risotto", "Mains", 15.50, "Vegetarian"),
            CatalogItem("Chicken Schnitzel", "Mains", 17.50),
            CatalogItem("Vegan Curry", "Mains", 14.00, "Chickpeas, spinach, coconut, rice"),
            CatalogItem("Tiramisu", "Desserts", 7.50),
            CatalogItem("Creme Brulee", "Desserts", 7.00),
            CatalogItem("Glass of House Wine", "Drinks", 6.50),
            CatalogItem("Sparkling Water", "Drinks", 3.50),
            CatalogItem("Craft Beer", "Drinks", 5.50),
            CatalogItem("Espresso", "Drinks", 2.50),
        ),
        seasonal=CatalogItem("Seasonal Tasting Plate", "Mains", 18.00, "Chef's autumn selection"),
        supplies=(
            ("Salmon fillet 5 kg", 95.0),
            ("Beef ribeye 10 kg", 260.0),
            ("Arborio rice 5 kg", 14.0),
            ("Olive oil 5 L", 38.0),
            ("House wine 6 x 0.75 L", 42.0),
        ),
        noun={"en": "food", "de": "Essen", "fr": "cuisine", "es": "comida", "ja": "料理"},
    ),
    "bar": CategoryProfile(
        volume=(110, 340),
        weekday=(0.4, 0.55, 0.72, 0.95, 1.6, 1.85, 0.7),
        hours=_h({0: 4, 1: 2, 16: 2, 17: 4, 18: 6, 19: 8, 20: 9, 21: 10, 22: 9, 23: 7}),
        basket_lines=(0.5, 0.3, 0.14, 0.06),
        tip_rate=0.45,
        refund_rate=0.004,
        items=(
            CatalogItem("Draft Lager", "Beer", 5.00),
            CatalogItem("IPA", "Beer", 6.00, "Local hazy IPA on tap"),
            CatalogItem("Stout", "Beer", 6.00),
            CatalogItem("Cider", "Beer", 5.50),
            CatalogItem("House Red", "Wine", 6.50),
            CatalogItem("Prosecco", "Wine", 7.50),
            CatalogItem("Gin and Tonic", "Cocktails", 9.50),
            CatalogItem("Negroni", "Cocktails", 11.00, "Gin, Campari, sweet vermouth"),
            CatalogItem("Old Fashioned", "Cocktails", 12.00),
            CatalogItem("Espresso Martini", "Cocktails", 12.00),
            CatalogItem("Aperol Spritz", "Cocktails", 9.00),
            CatalogItem("Whisky", "Spirits", 8.00),
            CatalogItem("Soft Drink", "Soft Drinks", 3.50),
            CatalogItem("Nachos", "Snacks", 8.50, "With cheese, jalapenos and salsa"),
            CatalogItem("Fries", "Snacks", 4.50),
            CatalogItem("Chicken Wings", "Snacks", 9.00),
        ),
        seasonal=CatalogItem("Mulled Wine", "Wine", 6.50, "Served warm, autumn and winter only"),
        supplies=(
            ("Lager keg 50 L", 165.0),
            ("Gin 0.7 L x6", 96.0),
            ("Tonic water x24", 21.0),
            ("Limes 5 kg", 17.5),
            ("Campari 1 L x3", 54.0),
        ),
        noun={"en": "drinks", "de": "Drinks", "fr": "cocktails", "es": "copas", "ja": "お酒"},
    ),
    "bakery": CategoryProfile(
        volume=(170, 430),
        weekday=(1.0, 0.95, 0.95, 1.0, 1.1, 1.4, 0.75),
        hours=_h({6: 6, 7: 10, 8: 10, 9: 8, 10: 6, 11: 5, 12: 5, 13: 4, 14: 3, 15: 3, 16: 3, 17: 2}),
        basket_lines=(0.45, 0.32, 0.15, 0.08),
        tip_rate=0.1,
        refund_rate=0.003,
        items=(
            CatalogItem("Sourdough Loaf", "Bread", 5.50, "48-hour fermented, organic flour"),
            CatalogItem("Rye Bread", "Bread", 4.80),
            CatalogItem("Baguette", "Bread", 2.50),
            CatalogItem("Pretzel", "Bread", 1.60),
            CatalogItem("Bread Rolls (6)", "Bread", 3.60),
            CatalogItem("Croissant", "Pastry", 2.20),
            CatalogItem("Cinnamon Roll", "Pastry", 3.20, "Cardamom and cinnamon, Swedish style"),
            CatalogItem("Apple Strudel", "Pastry", 3.80),
            CatalogItem("Cheesecake Slice", "Cakes", 4.20),
            CatalogItem("Brownie", "Cakes", 3.00),
            CatalogItem("Focaccia", "Bread", 4.50, "Rosemary and sea salt"),
            CatalogItem("Quiche Slice", "Savoury", 4.90),
            CatalogItem("Filter Coffee", "Drinks", 2.40),
            CatalogItem("Birthday Cake", "Cakes", 32.00, "Order 48 hours in advance"),
        ),
        seasonal=CatalogItem("Stollen Slice", "Cakes", 3.80, "Seasonal fruit bread"),
        supplies=(
            ("Wheat flour 25 kg", 21.0),
            ("Rye flour 25 kg", 24.0),
            ("Butter 10 kg", 79.0),
            ("Eggs x360", 68.0),
            ("Paper bags x1000", 29.0),
        ),
        noun={"en": "bread", "de": "Brot", "fr": "pain", "es": "pan", "ja": "パン"},
    ),
    "retail": CategoryProfile(
        volume=(50, 170),
        weekday=(0.8, 0.85, 0.9, 0.95, 1.15, 1.5, 0.0),
        hours=_h({10: 5, 11: 7, 12: 8, 13: 8, 14: 8, 15: 9, 16: 9, 17: 9, 18: 7, 19: 4}),
        basket_lines=(0.62, 0.26, 0.09, 0.03),
        tip_rate=0.0,
        refund_rate=0.025,
        items=(
            CatalogItem("Scented Candle", "Home", 24.00, "Fig and cedar, 40 hour burn"),
            CatalogItem("Ceramic Mug", "Home", 16.00, "Handmade stoneware"),
            CatalogItem("Notebook A5", "Stationery", 12.50),
            CatalogItem("Tote Bag", "Accessories", 18.00, "Organic cotton"),
            CatalogItem("Greeting Card", "Stationery", 4.50),
            CatalogItem("Linen Tea Towel", "Home", 14.00),
            CatalogItem("Small Houseplant", "Plants", 15.00),
            CatalogItem("Plant Pot", "Plants", 19.00),
            CatalogItem("Wool Scarf", "Accessories", 45.00, "Merino wool, several colours"),
            CatalogItem("Sunglasses", "Accessories", 39.00),
            CatalogItem("Phone Case", "Accessories", 25.00),
            CatalogItem("Water Bottle", "Accessories", 22.00, "Insulated steel, 500 ml"),
            CatalogItem("Socks", "Accessories", 9.50),
            CatalogItem("Wrapping Paper", "Stationery", 3.50),
            CatalogItem("Gift Voucher", "Vouchers", 25.00),
        ),
        seasonal=CatalogItem("Advent Calendar", "Home", 29.00, "Limited edition"),
        supplies=(
            ("Candles wholesale x24", 210.0),
            ("Ceramic mugs x36", 230.0),
            ("Tote bags x50", 160.0),
            ("Shipping boxes x100", 45.0),
        ),
        noun={"en": "shop", "de": "Laden", "fr": "boutique", "es": "tienda", "ja": "お店"},
    ),
    "beauty": CategoryProfile(
        volume=(50, 95),
        weekday=(0.0, 0.85, 0.95, 1.05, 1.2, 1.45, 0.0),
        hours=_h({9: 5, 10: 8, 11: 9, 12: 8, 13: 7, 14: 8, 15: 9, 16: 9, 17: 8, 18: 5}),
        basket_lines=(0.7, 0.24, 0.06),
        tip_rate=0.5,
        refund_rate=0.008,
        items=(
            CatalogItem("Women's Haircut", "Hair", 55.00, "Wash, cut and finish"),
            CatalogItem("Men's Haircut", "Hair", 32.00),
            CatalogItem("Kids' Haircut", "Hair", 20.00, "Under 12"),
            CatalogItem("Blow Dry", "Hair", 30.00),
            CatalogItem("Full Colour", "Colour", 85.00, "Single process colour, includes toner"),
            CatalogItem("Highlights", "Colour", 120.00),
            CatalogItem("Balayage", "Colour", 150.00, "Hand-painted highlights"),
            CatalogItem("Root Touch-up", "Colour", 60.00),
            CatalogItem("Beard Trim", "Hair", 15.00),
            CatalogItem("Manicure", "Nails", 30.00),
            CatalogItem("Gel Nails", "Nails", 45.00),
            CatalogItem("Pedicure", "Nails", 40.00),
            CatalogItem("Brow Shaping", "Face", 18.00),
            CatalogItem("Facial", "Face", 65.00, "60 minutes, for all skin types"),
            CatalogItem("Shampoo", "Retail", 22.00),
            CatalogItem("Hair Oil", "Retail", 28.00),
        ),
        seasonal=CatalogItem("Keratin Treatment", "Hair", 140.00, "Smoothing treatment, 2.5 hours"),
        supplies=(
            ("Hair colour tubes x48", 180.0),
            ("Developer 1 L x6", 42.0),
            ("Towels x50", 95.0),
            ("Gel polish set", 120.0),
        ),
        noun={"en": "salon", "de": "Salon", "fr": "salon", "es": "peluquería", "ja": "サロン"},
    ),
    "services": CategoryProfile(
        volume=(50, 85),
        weekday=(1.1, 1.0, 1.0, 1.0, 1.05, 0.7, 0.0),
        hours=_h({8: 6, 9: 8, 10: 8, 11: 7, 12: 6, 13: 6, 14: 7, 15: 7, 16: 8, 17: 7}),
        basket_lines=(0.72, 0.22, 0.06),
        tip_rate=0.05,
        refund_rate=0.012,
        items=(
            CatalogItem("Shirt Laundering", "Cleaning", 3.50),
            CatalogItem("Suit Dry Cleaning", "Cleaning", 16.00, "Two-piece suit, pressed"),
            CatalogItem("Dress Dry Cleaning", "Cleaning", 14.00),
            CatalogItem("Trouser Hemming", "Alterations", 12.00),
            CatalogItem("Zip Replacement", "Alterations", 15.00),
            CatalogItem("Key Cutting", "Repairs", 6.00),
            CatalogItem("Shoe Heel Repair", "Repairs", 18.00),
            CatalogItem("Watch Battery", "Repairs", 9.00, "Fitted while you wait"),
            CatalogItem("Phone Screen Repair", "Repairs", 89.00, "Most models same day"),
            CatalogItem("Phone Battery Replacement", "Repairs", 59.00),
            CatalogItem("Express Surcharge", "Fees", 5.00),
        ),
        seasonal=CatalogItem("Winter Coat Cleaning", "Cleaning", 24.00, "Wool and down coats"),
        supplies=(
            ("Dry cleaning solvent 20 L", 140.0),
            ("Garment bags x200", 38.0),
            ("Key blanks x100", 55.0),
            ("Replacement screens x5", 210.0),
        ),
        noun={"en": "service", "de": "Service", "fr": "service", "es": "servicio", "ja": "サービス"},
    ),
    "food_truck": CategoryProfile(
        volume=(70, 210),
        weekday=(0.0, 0.8, 0.9, 1.0, 1.25, 1.5, 1.1),
        hours=_h({11: 5, 12: 10, 13: 9, 14: 4, 17: 4, 18: 7, 19: 6, 20: 3}),
        basket_lines=(0.5, 0.33, 0.13, 0.04),
        tip_rate=0.3,
        refund_rate=0.005,
        items=(
            CatalogItem("Classic Burger", "Burgers", 10.50, "Beef patty, cheddar, pickles"),
            CatalogItem("Cheeseburger", "Burgers", 11.50),
            CatalogItem("Veggie Burger", "Burgers", 10.50, "Black bean patty, vegan mayo"),
            CatalogItem("Pulled Pork Sandwich", "Sandwiches", 11.00),
            CatalogItem("Fish Tacos (2)", "Tacos", 9.50),
            CatalogItem("Loaded Fries", "Sides", 6.50),
            CatalogItem("Fries", "Sides", 4.00),
            CatalogItem("Hot Dog", "Sandwiches", 6.00),
            CatalogItem("Falafel Wrap", "Sandwiches", 9.00, "Vegan"),
            CatalogItem("Lemonade", "Drinks", 3.50, "Freshly squeezed"),
            CatalogItem("Soft Drink", "Drinks", 2.50),
            CatalogItem("Churros", "Desserts", 5.00),
        ),
        seasonal=CatalogItem("Chili Cheese Fries", "Sides", 7.50, "Autumn special"),
        supplies=(
            ("Burger patties x80", 128.0),
            ("Brioche buns x96", 41.0),
            ("Frying oil 20 L", 46.0),
            ("Propane refill", 35.0),
        ),
        noun={"en": "food", "de": "Essen", "fr": "cuisine", "es": "comida", "ja": "料理"},
    ),
}


@dataclass(frozen=True)
class Country:
    """Where a merchant trades: money, time, payment habits and languages."""

    code: str
    currency: str
    timezone: str
    price_factor: float
    vat_rate: float
    # Tip propensity multiplier and typical tip share of the subtotal.
    tip_culture: float
    tip_share: tuple[float, float]
    # Weights for CARD, CONTACTLESS, WALLET, CASH, QR, OTHER.
    methods: tuple[float, float, float, float, float, float]
    schemes: tuple[tuple[str, float], ...]
    languages: tuple[tuple[str, float], ...]
    surnames: tuple[str, ...]
    places: tuple[str, ...]
    city: str


PAYMENT_METHODS: tuple[str, ...] = ("CARD", "CONTACTLESS", "WALLET", "CASH", "QR", "OTHER")
CARD_METHODS = frozenset({"CARD", "CONTACTLESS", "WALLET"})

_EU_SCHEMES = (("VISA", 0.55), ("MASTERCARD", 0.38), ("AMEX", 0.07))

# Rotation order of merchants: the first few cover DST zones on both sides of
# the Atlantic, JPY (no minor units) and the southern hemisphere.
COUNTRIES: tuple[Country, ...] = (
    Country(
        "DE",
        "EUR",
        "Europe/Berlin",
        1.0,
        0.19,
        0.7,
        (0.05, 0.1),
        (0.3, 0.24, 0.1, 0.33, 0.0, 0.03),
        _EU_SCHEMES,
        (("de", 0.72), ("en", 0.18), ("fr", 0.05), ("es", 0.05)),
        ("Becker", "Wagner", "Hoffmann", "Keller", "Richter", "Lindner", "Vogel", "Brandt"),
        ("Kreuzberg", "Lindenhof", "Spreeufer", "Schillerkiez", "Marktplatz", "Altstadt"),
        "Berlin",
    ),
    Country(
        "US",
        "USD",
        "America/New_York",
        1.12,
        0.08875,
        1.6,
        (0.15, 0.22),
        (0.36, 0.24, 0.22, 0.14, 0.01, 0.03),
        (("VISA", 0.53), ("MASTERCARD", 0.25), ("AMEX", 0.16), ("DISCOVER", 0.06)),
        (("en", 0.84), ("es", 0.12), ("fr", 0.04)),
        ("Miller", "Brooks", "Sullivan", "Nguyen", "Parker", "Coleman", "Reyes", "Foster"),
        ("Hudson", "Brooklyn", "Union Square", "Chelsea", "Astoria", "Tribeca"),
        "New York",
    ),
    Country(
        "GB",
        "GBP",
        "Europe/London",
        0.88,
        0.20,
        0.8,
        (0.08, 0.125),
        (0.14, 0.5, 0.2, 0.13, 0.01, 0.02),
        _EU_SCHEMES,
        (("en", 0.86), ("fr", 0.05), ("de", 0.05), ("es", 0.04)),
        ("Hughes", "Barker", "Whitmore", "Ellis", "Fletcher", "Holloway", "Davies", "Carter"),
        ("Camden", "Riverside", "Highgate", "Market Lane", "Brixton", "Kings Cross"),
        "London",
    ),
    Country(
        "JP",
        "JPY",
        "Asia/Tokyo",
        165.0,
        0.10,
        0.0,
        (0.0, 0.0),
        (0.2, 0.1, 0.06, 0.4, 0.21, 0.03),
        (("VISA", 0.38), ("JCB", 0.3), ("MASTERCARD", 0.22), ("AMEX", 0.1)),
        (("ja", 0.82), ("en", 0.18)),
        ("Tanaka", "Sato", "Suzuki", "Hoshino", "Kobayashi", "Yamada", "Mori", "Ishikawa"),
        ("Shibuya", "Nakameguro", "Asakusa", "Ginza", "Kichijoji", "Shimokita"),
        "Tokyo",
    ),
    Country(
        "AU",
        "AUD",
        "Australia/Sydney",
        1.75,
        0.10,
        0.4,
        (0.05, 0.1),
        (0.1, 0.55, 0.22, 0.1, 0.01, 0.02),
        _EU_SCHEMES,
        (("en", 0.9), ("ja", 0.05), ("es", 0.05)),
        ("Mitchell", "Kelly", "Walsh", "Bennett", "Murray", "Fraser", "Doyle", "Quinn"),
        ("Bondi", "Surry Hills", "Harbour", "Newtown", "Manly", "Glebe"),
        "Sydney",
    ),
    Country(
        "US",
        "USD",
        "America/Los_Angeles",
        1.18,
        0.095,
        1.6,
        (0.15, 0.22),
        (0.34, 0.24, 0.26, 0.12, 0.01, 0.03),
        (("VISA", 0.53), ("MASTERCARD", 0.25), ("AMEX", 0.16), ("DISCOVER", 0.06)),
        (("en", 0.74), ("es", 0.22), ("ja", 0.04)),
        ("Garcia", "Kim", "Anderson", "Lopez", "Turner", "Hayes", "Rivera", "Chen"),
        ("Sunset", "Silver Lake", "Venice", "Echo Park", "Pasadena", "Los Feliz"),
        "Los Angeles",
    ),
    Country(
        "FR",
        "EUR",
        "Europe/Paris",
        1.05,
        0.20,
        0.5,
        (0.05, 0.1),
        (0.38, 0.3, 0.1, 0.19, 0.0, 0.03),
        _EU_SCHEMES,
        (("fr", 0.8), ("en", 0.14), ("de", 0.03), ("es", 0.03)),
        ("Dubois", "Moreau", "Laurent", "Girard", "Lefevre", "Fontaine", "Roux", "Blanc"),
        ("Montmartre", "Marais", "Belleville", "Bastille", "Oberkampf", "Batignolles"),
        "Paris",
    ),
    Country(
        "ES",
        "EUR",
        "Europe/Madrid",
        0.9,
        0.21,
        0.5,
        (0.05, 0.1),
        (0.3, 0.3, 0.1, 0.27, 0.0, 0.03),
        _EU_SCHEMES,
        (("es", 0.8), ("en", 0.14), ("fr", 0.06)),
        ("Martinez", "Ruiz", "Navarro", "Morales", "Castillo", "Ortega", "Romero", "Vidal"),
        ("Malasaña", "Gracia", "Triana", "Chamberí", "Lavapiés", "El Born"),
        "Madrid",
    ),
)

ADJECTIVES = ("Copper", "Golden", "Blue", "Little", "Crooked", "Wild", "Olive", "Velvet", "Salt", "Juniper")
ANIMALS = ("Fox", "Heron", "Hare", "Owl", "Stag", "Otter", "Magpie", "Badger")

# Name templates per category; a country-specific list wins when present.
NAME_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "cafe": {
        "*": ("{surname}'s Coffee", "{place} Coffee House", "The {adj} Bean", "{adj} Cup Cafe"),
        "DE": ("Café {place}", "Kaffeerösterei {surname}", "Café {surname}"),
        "FR": ("Café {place}", "Le Petit {adj} Café", "Café {surname}"),
        "ES": ("Café {place}", "Cafetería {surname}"),
        "JP": ("Kissa {surname}", "{place} Coffee Stand", "Café {surname}"),
    },
    "restaurant": {
        "*": ("{surname}'s Kitchen", "{place} Bistro", "The {adj} Table", "Trattoria {surname}"),
        "DE": ("Gasthaus {surname}", "Restaurant {place}", "Wirtshaus zum {animal}"),
        "FR": ("Bistrot {surname}", "Chez {surname}", "Le {adj} {animal}"),
        "ES": ("Casa {surname}", "Taberna {place}", "Restaurante {surname}"),
        "JP": ("{surname} Shokudo", "Izakaya {surname}", "{place} Kitchen"),
    },
    "bar": {
        "*": ("The {adj} {animal}", "{place} Tap Room", "Bar {surname}", "The {animal} and {animal2}"),
        "DE": ("Kneipe {surname}", "{place} Bar", "Zum {adj} {animal}"),
        "JP": ("Bar {surname}", "{place} Highball Bar"),
    },
    "bakery": {
        "*": ("{surname} Bakery", "{place} Bread Co.", "The {adj} Crust"),
        "DE": ("Bäckerei {surname}", "Backstube {place}"),
        "FR": ("Boulangerie {surname}", "Au Pain de {place}"),
        "ES": ("Panadería {surname}", "Horno {place}"),
        "JP": ("{surname} Bakery", "Pan no {surname}"),
    },
    "retail": {
        "*": ("{place} General Store", "{adj} & Co.", "{surname} Goods", "The {adj} Shop"),
        "DE": ("Laden {place}", "{surname} Concept Store"),
        "FR": ("Maison {surname}", "La Boutique {place}"),
    },
    "beauty": {
        "*": ("{surname} Hair Studio", "{place} Beauty Lounge", "Salon {surname}", "The {adj} Chair"),
        "DE": ("Friseur {surname}", "Salon {place}"),
        "FR": ("Salon {surname}", "Institut {place}"),
        "JP": ("Hair Salon {surname}", "{place} Beauty"),
    },
    "services": {
        "*": ("{place} Dry Cleaners", "{surname} Repairs", "Fix-It {place}", "{surname} Tailoring"),
        "DE": ("Reinigung {surname}", "Schuh- und Schlüsseldienst {place}"),
        "JP": ("{surname} Cleaning", "{place} Repair"),
    },
    "food_truck": {
        "*": ("{surname}'s Burger Truck", "Rolling {animal}", "{place} Street Eats", "The {adj} Wagon"),
        "DE": ("{surname}s Foodtruck", "Streetfood {place}"),
        "JP": ("{surname} Kitchen Car", "{place} Food Truck"),
    },
}
