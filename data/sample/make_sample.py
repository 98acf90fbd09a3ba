"""Writes the quickstart sample corpus (BEIR layout). The passages were written for fretflow and are
released with it under Apache-2.0; they are short on purpose so `make demo` finishes fast on 2 cores."""
import json

P = [
 ("bio-1", "Photosynthesis", "Plants convert light energy into chemical energy. Chlorophyll in the chloroplasts absorbs red and blue light, and the energy splits water molecules, releasing oxygen as a by-product."),
 ("bio-2", "Calvin cycle", "In the Calvin cycle, the enzyme RuBisCO fixes carbon dioxide into three-carbon sugars using ATP and NADPH made by the light reactions of photosynthesis."),
 ("bio-3", "Mitochondria", "Mitochondria produce most of a cell's ATP through oxidative phosphorylation. They carry their own small circular genome, inherited from the mother in most animals."),
 ("bio-4", "Antibiotic resistance", "Bacteria become resistant to antibiotics through mutation and by swapping plasmids that carry resistance genes. Overuse of antibiotics in farming and medicine speeds up this selection."),
 ("bio-5", "Vaccines", "A vaccine trains the immune system by presenting a harmless form of an antigen, so that memory B and T cells respond quickly when the real pathogen appears."),
 ("bio-6", "Honeybee communication", "Forager honeybees perform a waggle dance on the comb. The angle of the dance relative to vertical encodes the direction of food relative to the sun, and its duration encodes distance."),
 ("phy-1", "Boundary layers", "Near a solid surface, viscosity slows a moving fluid and forms a thin boundary layer. When the pressure rises along the flow, the layer can separate from the surface and create a wake."),
 ("phy-2", "Skin friction drag", "Skin friction drag comes from shear stress in the boundary layer. A turbulent boundary layer produces more skin friction than a laminar one at the same Reynolds number."),
 ("phy-3", "Shock waves", "When an aircraft flies faster than sound, the air cannot move out of the way smoothly and a shock wave forms, across which pressure, density and temperature jump abruptly."),
 ("phy-4", "Heat transfer at high speed", "At hypersonic speeds, friction heats the air in the boundary layer so strongly that the vehicle surface needs ablative or ceramic thermal protection."),
 ("phy-5", "Superconductivity", "Below a critical temperature, some materials conduct electricity with zero resistance and expel magnetic fields, an effect named after Meissner."),
 ("phy-6", "Lasers", "A laser amplifies light by stimulated emission in a medium with a population inversion, placed between mirrors that form an optical resonator."),
 ("cs-1", "Hash tables", "A hash table stores key-value pairs in an array indexed by a hash of the key. Collisions are resolved by chaining or by open addressing, giving constant expected lookup time."),
 ("cs-2", "B-trees", "B-trees keep sorted keys in wide nodes so that each lookup touches few disk pages. Databases and file systems use them for indexes that must stay balanced under inserts and deletes."),
 ("cs-3", "Garbage collection", "A tracing garbage collector finds live objects by following references from the roots and frees everything else. Generational collectors exploit the fact that most objects die young."),
 ("cs-4", "TCP congestion control", "TCP slows its sending rate when packets are lost, treating loss as a sign of congestion. Additive increase and multiplicative decrease keep competing flows roughly fair."),
 ("cs-5", "Dataflow systems", "A dataflow system runs a program as a graph of operators connected by streams. Incremental dataflow recomputes only what changed when new input arrives, instead of the whole result."),
 ("cs-6", "Word embeddings", "Dense text embeddings map words or passages to vectors so that similar meanings lie close together. Retrieval systems compare a query vector with passage vectors by cosine similarity."),
 ("cs-7", "Public-key cryptography", "In public-key cryptography, anyone can encrypt a message with a public key, but only the holder of the matching private key can decrypt it. RSA relies on the difficulty of factoring large numbers."),
 ("cs-8", "Consensus", "Consensus protocols such as Raft and Paxos let a cluster of machines agree on a sequence of commands even when some machines crash, as long as a majority remains reachable."),
 ("his-1", "Printing press", "Around 1450 Johannes Gutenberg combined movable metal type, oil-based ink and a screw press. Printed books became cheap, and literacy spread across Europe within a century."),
 ("his-2", "Roman aqueducts", "Roman aqueducts carried water over long distances using a gentle, constant downward slope. Arches of stone and concrete held the channel up where it crossed valleys."),
 ("his-3", "Silk Road", "The Silk Road was a network of trade routes linking China with Central Asia, Persia and the Mediterranean. Silk, spices, paper and ideas travelled along it for more than a thousand years."),
 ("his-4", "Industrial Revolution", "Steam engines, mechanized spinning and cheap iron transformed British industry in the late eighteenth century, moving work from homes and farms into factories and cities."),
 ("his-5", "Apollo 11", "In July 1969 Apollo 11 landed on the Moon. Neil Armstrong and Buzz Aldrin walked on the surface while Michael Collins orbited in the command module."),
 ("geo-1", "Plate tectonics", "The Earth's lithosphere is broken into plates that move a few centimetres per year. Earthquakes and volcanoes cluster along their boundaries, where plates collide, separate or slide past each other."),
 ("geo-2", "Monsoons", "Monsoons are seasonal reversals of wind. In summer the land heats faster than the ocean, drawing moist air inland and bringing heavy rain to South Asia."),
 ("geo-3", "Glaciers", "Glaciers form where more snow falls than melts over many years. The compacted ice flows slowly downhill under its own weight and carves U-shaped valleys."),
 ("geo-4", "Coral reefs", "Coral reefs are built by colonies of tiny animals that secrete calcium carbonate. Warmer seas cause bleaching, when corals expel the algae that feed them."),
 ("food-1", "Bread rising", "Yeast ferments sugars in dough and releases carbon dioxide. Gluten, formed when flour is kneaded with water, traps the gas so that the bread rises."),
 ("food-2", "Maillard reaction", "The Maillard reaction between amino acids and sugars browns seared meat, toasted bread and roasted coffee, creating hundreds of flavour compounds above about 140 degrees Celsius."),
 ("food-3", "Fermented vegetables", "Sauerkraut and kimchi are made by lactic acid bacteria that ferment the sugars in salted vegetables. The acid preserves the food and gives it a sour taste."),
 ("food-4", "Espresso", "Espresso is brewed by forcing hot water through finely ground, compacted coffee at about nine bars of pressure, producing a concentrated shot topped with crema."),
 ("med-1", "Blood pressure", "Blood pressure is written as systolic over diastolic pressure. Persistent high blood pressure damages arteries and raises the risk of stroke and heart attack."),
 ("med-2", "Insulin", "The pancreas releases insulin after a meal so that cells take up glucose from the blood. In type 1 diabetes the insulin-producing cells are destroyed by the immune system."),
 ("med-3", "Sleep", "During sleep the brain cycles between REM and non-REM stages. Deep non-REM sleep helps consolidate memories, and chronic lack of sleep impairs attention and mood."),
 ("eco-1", "Inflation", "Inflation is a general rise in prices that reduces the purchasing power of money. Central banks usually raise interest rates to bring it down."),
 ("eco-2", "Comparative advantage", "Ricardo's theory of comparative advantage says two countries both gain from trade when each specializes in what it produces at a lower opportunity cost, even if one is better at everything."),
 ("art-1", "Perspective in painting", "Renaissance painters used linear perspective, with lines converging at a vanishing point, to create the illusion of depth on a flat surface."),
 ("art-2", "Sonata form", "Sonata form has an exposition that presents two contrasting themes, a development that transforms them, and a recapitulation that returns them in the home key."),
]

Q = [
 ("q1", "how do plants turn sunlight into chemical energy", {"bio-1": 2, "bio-2": 1}),
 ("q2", "why do bacteria stop responding to antibiotics", {"bio-4": 2}),
 ("q3", "what happens when a boundary layer separates", {"phy-1": 2, "phy-2": 1}),
 ("q4", "does a turbulent boundary layer increase friction drag", {"phy-2": 2, "phy-1": 1}),
 ("q5", "how are hash collisions handled", {"cs-1": 2}),
 ("q6", "incremental computation over streams of changes", {"cs-5": 2}),
 ("q7", "how do machines in a cluster agree despite failures", {"cs-8": 2}),
 ("q8", "when was the printing press invented and by whom", {"his-1": 2}),
 ("q9", "why are earthquakes common near plate boundaries", {"geo-1": 2}),
 ("q10", "what makes bread dough rise", {"food-1": 2}),
 ("q11", "why does seared meat turn brown", {"food-2": 2}),
 ("q12", "how do bees tell each other where flowers are", {"bio-6": 2}),
 ("q13", "protecting spacecraft from heating at hypersonic speed", {"phy-4": 2, "phy-3": 1}),
 ("q14", "how does raising interest rates affect prices", {"eco-1": 2}),
 ("q15", "comparing text by vector similarity for search", {"cs-6": 2}),
 ("q16", "what does the pancreas do after eating", {"med-2": 2}),
]

with open("corpus.jsonl", "w") as f:
    for pid, title, text in P:
        f.write(json.dumps({"_id": pid, "title": title, "text": text}) + "\n")
with open("queries.jsonl", "w") as f:
    for qid, text, _ in Q:
        f.write(json.dumps({"_id": qid, "text": text}) + "\n")
with open("qrels/test.tsv", "w") as f:
    f.write("query-id\tcorpus-id\tscore\n")
    for qid, _, rels in Q:
        for pid, g in rels.items():
            f.write(f"{qid}\t{pid}\t{g}\n")
