package main

// This file holds `coffre catalog`: maintenance of the control plane's
// catalog (rebuilding a vault's recovery point index from the vault).

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coffre/coffre/internal/catalog"
	"github.com/coffre/coffre/internal/hint"
	"github.com/coffre/coffre/internal/jobs"
	"github.com/coffre/coffre/internal/lifecycle"
	"github.com/coffre/coffre/internal/repo/blob"
	"github.com/coffre/coffre/internal/repo/location"
)

func cmdCatalog(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "catalog", Short: "Maintain the control plane's catalog"}
	var f policyFlags
	var vault string
	rebuild := &cobra.Command{
		Use:   "rebuild --vault NAME",
		Short: "Rebuild the catalog's recovery point index of a vault from the vault's manifests",
		Long: `Rebuild the catalog's recovery point index of a catalog vault from the
recovery point manifests stored in the vault (the source of truth): one row
per manifest, lifecycle (plan, rule, job, cold and delete dates) included;
rows whose manifest is gone are removed, rows of unreadable manifests kept.
Running it again changes nothing. --vault is the vault's name in the catalog,
not a location; the vault is opened with its key from the keyring and under
a shared lock.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if vault == "" {
				return withCode(exitUsage, errors.New("give the catalog vault's name with --vault NAME"))
			}
			ctx := cmd.Context()
			cat, err := f.openCatalog(ctx)
			if err != nil {
				return err
			}
			defer cat.Close()
			v, err := cat.GetVault(ctx, vault)
			if errors.Is(err, catalog.ErrNotFound) {
				return hint.With(fmt.Errorf("vault %q is not in the catalog", vault), "declare it in HCL and run `coffre apply`")
			}
			if err != nil {
				return err
			}
			keys, err := f.keyring()
			if err != nil {
				return err
			}
			// The opener creates a vault where there is none; rebuilding
			// from an empty new vault would empty the index instead.
			if err := vaultExists(ctx, v); err != nil {
				return err
			}
			r, err := (&jobs.Opener{Keys: keys, Logger: g.log}).Open(ctx, v)
			if err != nil {
				return err
			}
			defer r.Close()
			lock, err := r.Lock(ctx, false, "catalog-rebuild")
			if err != nil {
				return err
			}
			defer lock.Unlock()
			res, err := lifecycle.Rebuild(ctx, cat, v, r)
			if err != nil {
				return err
			}
			errs := make([]string, len(res.Errors))
			for i, e := range res.Errors {
				errs[i] = e.Error()
				if !g.jsonOut {
					fmt.Fprintf(g.stderr, "warning: %v\n", e)
				}
			}
			if g.jsonOut {
				if err := g.printJSON(map[string]any{"vault": v.Name, "added": res.Added, "updated": res.Updated,
					"removed": res.Removed, "unreadable": res.Unreadable, "errors": errs}); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(g.stdout, "catalog index of vault %s rebuilt: %d added, %d updated, %d removed, %d unreadable\n",
					v.Name, res.Added, res.Updated, res.Removed, res.Unreadable)
			}
			switch {
			case res.Unreadable > 0:
				return withCode(exitDamage, hint.With(fmt.Errorf("%d recovery point manifest(s) of vault %s could not be read; their catalog rows were kept", res.Unreadable, v.Name),
					"run `coffre check` on the vault to see what is damaged"))
			case len(res.Errors) > 0:
				return fmt.Errorf("%d catalog row(s) of vault %s could not be written: %s", len(res.Errors), v.Name, errs[0])
			}
			return nil
		},
	}
	rebuild.Flags().StringVar(&vault, "vault", "", "name of the catalog vault whose index to rebuild (required)")
	f.registerCatalog(rebuild)
	f.registerKeyring(rebuild)
	c.AddCommand(rebuild)
	return c
}

// vaultExists fails unless a vault (its config) is at v's location.
func vaultExists(ctx context.Context, v catalog.Vault) error {
	fix := "check the vault's location in the catalog (a mounted disk, the bucket and its credentials)"
	be, err := location.Open(ctx, v.Location, false)
	if err != nil {
		return hint.With(fmt.Errorf("vault %s: %w", v.Name, err), fix)
	}
	defer be.Close()
	if _, err := be.Stat(ctx, blob.Handle{Kind: blob.KindConfig, Name: "config"}); err != nil {
		if blob.IsNotExist(err) {
			return hint.With(fmt.Errorf("vault %s: no vault at %s", v.Name, v.Location), fix)
		}
		return fmt.Errorf("vault %s: %w", v.Name, err)
	}
	return nil
}
